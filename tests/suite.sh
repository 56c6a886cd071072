#!/usr/bin/env bash
# The whole test suite: installs what the tests need (the tansu Kafka broker, the noida-db
# Elasticsearch API server), then runs every
# test target. This is README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
WAFSTREAM_TANSU="$(bash tests/services/install-tansu.sh)"
WAFSTREAM_NOIDA="$(bash tests/services/install-noida.sh)"
export WAFSTREAM_TANSU WAFSTREAM_NOIDA
cargo test --all-targets "$@"
