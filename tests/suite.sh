#!/usr/bin/env bash
# The whole test suite: installs what the tests need (the tansu Kafka broker), then runs every
# test target. This is README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
WAFSTREAM_TANSU="$(bash tests/services/install-tansu.sh)"
export WAFSTREAM_TANSU
cargo test --all-targets "$@"
