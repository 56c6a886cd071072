#!/usr/bin/env bash
# Start one OpenSearch 2.19.1 node (tests/services/opensearch/OpenSearchNode.java) for tests, in
# the foreground:
#
#   tests/services/opensearch.sh BASE_DIR HTTP_PORT TRANSPORT_PORT [WATCH_PID]
#
# - HTTP on 127.0.0.1:HTTP_PORT; single-node discovery; disk thresholds off; roles
#   cluster_manager, data, ingest. Data, config and OpenSearch's own logs live under
#   BASE_DIR/node_1, so stopping and starting again on the same BASE_DIR keeps the indices.
# - Prints "opensearch ready http://127.0.0.1:HTTP_PORT" on stdout once the cluster is yellow
#   (~12 s); the runner's chatter goes to stdout too, Java's errors to stderr.
# - The script execs java: its PID is the node's, SIGTERM closes it cleanly.
# - A watchdog (watchdog.sh) stops the node when WATCH_PID (default: the parent process) is gone
#   (and with WAFSTREAM_SERVICE_CLEANUP=1 then removes BASE_DIR).
# - The install comes from WAFSTREAM_OPENSEARCH_HOME (the dir install-opensearch.sh prints), else from
#   running install-opensearch.sh. JVM flags: WAFSTREAM_OPENSEARCH_JVM_OPTS (default: a 384 MiB
#   heap, serial GC, C1 only).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 BASE_DIR HTTP_PORT TRANSPORT_PORT [WATCH_PID]" >&2
  exit 2
fi
base="$(mkdir -p "$1" && cd "$1" && pwd)"
http="$2"
transport="$3"
watch="${4:-$PPID}"
here="$(cd "$(dirname "$0")" && pwd)"
home="${WAFSTREAM_OPENSEARCH_HOME:-$(bash "$here/install-opensearch.sh")}"
jvm_opts="${WAFSTREAM_OPENSEARCH_JVM_OPTS:--Xms384m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
# shellcheck source=tests/services/watchdog.sh
. "$here/watchdog.sh"
start_watchdog "$watch" "${WAFSTREAM_SERVICE_CLEANUP:+$base}"
# shellcheck disable=SC2086
exec java $jvm_opts -XX:-UsePerfData -Djava.awt.headless=true -Dfile.encoding=UTF-8 \
  -cp "$home/lib/*:$home/classes" OpenSearchNode "$base" "$http" "$transport"
