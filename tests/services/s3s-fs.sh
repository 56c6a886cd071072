#!/usr/bin/env bash
# Start s3s-fs (an S3 API server over a folder) for tests, in the foreground:
#
#   tests/services/s3s-fs.sh DATA_DIR PORT UNUSED [WATCH_PID]
#
# - Clients connect to http://127.0.0.1:PORT (path-style) with access key `wafstream-test` and
#   secret `wafstream-test-secret` (WAFSTREAM_S3_TEST_ACCESS_KEY / _SECRET_KEY override them);
#   requests signed with anything else are refused.
# - Buckets are the folders of DATA_DIR/root and objects the files under them, so a test makes a
#   bucket with mkdir; they are kept across restarts on the same DATA_DIR. Ready when
#   DATA_DIR/stdout.log (where the tests send its output) says "server is running".
# - The script execs s3s-fs: its PID is the server's. A watchdog (watchdog.sh) stops it when
#   WATCH_PID (default: the parent process) is gone; with WAFSTREAM_SERVICE_CLEANUP=1 it then also
#   removes DATA_DIR.
# - The binary comes from WAFSTREAM_S3S_FS (the path install-s3s-fs.sh prints), else from running
#   install-s3s-fs.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 DATA_DIR PORT UNUSED [WATCH_PID]" >&2
  exit 2
fi
data="$(mkdir -p "$1" && cd "$1" && pwd)"
port="$2"
watch="${4:-$PPID}"
here="$(cd "$(dirname "$0")" && pwd)"
bin="${WAFSTREAM_S3S_FS:-$(bash "$here/install-s3s-fs.sh")}"
mkdir -p "$data/root"
# shellcheck source=watchdog.sh
. "$here/watchdog.sh"
start_watchdog "$watch" "${WAFSTREAM_SERVICE_CLEANUP:+$data}"
export RUST_LOG="${RUST_LOG:-info}"
exec "$bin" --host 127.0.0.1 --port "$port" \
  --access-key "${WAFSTREAM_S3_TEST_ACCESS_KEY:-wafstream-test}" \
  --secret-key "${WAFSTREAM_S3_TEST_SECRET_KEY:-wafstream-test-secret}" \
  "$data/root"
