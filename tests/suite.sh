#!/usr/bin/env bash
# The whole test suite: installs what the tests need into ${WAFSTREAM_CACHE:-~/.cache/wafstream}
# (Apache Kafka 4.4.0 and OpenSearch 2.19.1 from Maven Central, noida-db, two Splunk HEC
# clients and check-jsonschema from PyPI, the s3s-fs S3 server from crates.io, promtool from
# Debian, typescript and @grafana/schema from npm, Helm 3.22.0 built with `go install` and
# kubernetes-validate 1.37.0 from PyPI for the chart checks), then runs every test target. The
# tests start one broker / one node per test binary themselves, and fail (instead of skipping)
# when a service is missing. This is README's test command and what
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
WAFSTREAM_S3S_FS="$(install "s3s-fs 0.14.1" bash tests/services/install-s3s-fs.sh)"
WAFSTREAM_HEC_PYTHON="$(install "HEC clients (splunk-handler 3.0.0, splunk-data-sender 0.5.0)" bash tests/services/install-hec-clients.sh)"
WAFSTREAM_PROMTOOL="$(install "promtool (Debian's prometheus 2.42)" bash tests/services/install-promtool.sh)"
WAFSTREAM_GRAFANA_SCHEMA="$(install "typescript 5 + @grafana/schema 13.2.3" bash tests/services/install-grafana-schema.sh)"
WAFSTREAM_CHECK_JSONSCHEMA="$(install "check-jsonschema 0.39.0" bash tests/services/install-check-jsonschema.sh)"
WAFSTREAM_HELM="$(install "Helm 3.22.0" bash tests/services/install-helm.sh)"
WAFSTREAM_K8S_VALIDATE="$(install "kubernetes-validate 1.37.0" bash tests/services/install-kubernetes-validate.sh)"
export WAFSTREAM_KAFKA_LIB WAFSTREAM_OPENSEARCH_HOME WAFSTREAM_NOIDA WAFSTREAM_S3S_FS WAFSTREAM_HEC_PYTHON
export WAFSTREAM_HELM WAFSTREAM_K8S_VALIDATE
export WAFSTREAM_PROMTOOL WAFSTREAM_GRAFANA_SCHEMA WAFSTREAM_CHECK_JSONSCHEMA
export WAFSTREAM_REQUIRE_SERVICES=1
cargo test --all-targets "$@"
# Nothing the tests started may outlive them: wafstream processes (they die with their test's
# thread) and the services (their watchdog stops them within ~1 s of the test binary's exit).
sleep 3
left="$(pgrep -af "$PWD/target/[a-z]*/wafstream |wafstream-services|noida-db|s3s-fs" | grep -v pgrep || true)"
if [ -n "$left" ]; then
  echo "suite: processes left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "suite: no process left behind" >&2
