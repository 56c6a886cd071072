#!/usr/bin/env bash
# Install Apache Kafka 4.4.0 (broker + KRaft controller, Java 17 class files) for the Kafka tests
# and benchmarks: Maven resolves tests/services/kafka/pom.xml from Maven Central into
# ${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}/kafka-4.4.0/lib (its local repository under
# $CACHE/m2). Prints the lib dir on stdout (everything else goes to stderr); start a broker
# with tests/services/kafka.sh. Idempotent: a marker written last means a finished install, so
# an interrupted download is done again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}"
home="$cache/kafka-4.4.0"
lib="$home/lib"
marker="$home/.installed"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(sha256sum < "$here/kafka/pom.xml")" ]; then
  echo "$lib"
  exit 0
fi
command -v mvn >/dev/null || { echo "install-kafka.sh: mvn (Maven) not found" >&2; exit 1; }
command -v java >/dev/null || { echo "install-kafka.sh: java (JDK 17+) not found" >&2; exit 1; }
rm -rf "$home"
mkdir -p "$lib"
echo "install-kafka.sh: resolving Apache Kafka 4.4.0 into $lib" >&2
mvn -q -B -Dmaven.repo.local="$cache/m2" -f "$here/kafka/pom.xml" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib" 2>&1 |
  sed 's/\x1b\[[0-9;]*m//g' >&2
ls "$lib"/kafka_2.13-4.4.0.jar >/dev/null
sha256sum < "$here/kafka/pom.xml" > "$marker"
echo "install-kafka.sh: $(ls "$lib" | wc -l) jars, $(du -sh "$lib" | cut -f1)" >&2
echo "$lib"
