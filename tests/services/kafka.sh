#!/usr/bin/env bash
# Start a single-node Apache Kafka 4.4.0 (KRaft: one JVM as broker and controller) for tests and
# benchmarks, in the foreground:
#
#   tests/services/kafka.sh DATA_DIR PORT CONTROLLER_PORT [WATCH_PID]
#
# - Clients connect to 127.0.0.1:PORT (PLAINTEXT); the controller listens on CONTROLLER_PORT.
# - DATA_DIR keeps the log segments (DATA_DIR/log), server.properties, log4j2.properties and the
#   broker's log (DATA_DIR/server.log, the previous start's in server.log.1). The storage is
#   formatted only the first time, so stopping and starting again on the same DATA_DIR keeps
#   topics, messages and committed offsets. Ready when server.log says "Kafka Server started".
# - The script execs java: its PID is the broker's, SIGTERM stops it cleanly (1-3 s).
# - A watchdog (watchdog.sh) stops the broker when WATCH_PID (default: the parent process) is
#   gone, so a test binary that exits without stopping it leaves no broker behind; with
#   WAFSTREAM_SERVICE_CLEANUP=1 it then also removes DATA_DIR.
# - The jars come from WAFSTREAM_KAFKA_LIB (the lib dir install-kafka.sh prints), else from running
#   install-kafka.sh. JVM flags: WAFSTREAM_KAFKA_JVM_OPTS (default: a small test heap, C1 only).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 DATA_DIR PORT CONTROLLER_PORT [WATCH_PID]" >&2
  exit 2
fi
data="$(mkdir -p "$1" && cd "$1" && pwd)"
port="$2"
cport="$3"
watch="${4:-$PPID}"
here="$(cd "$(dirname "$0")" && pwd)"
lib="${WAFSTREAM_KAFKA_LIB:-$(bash "$here/install-kafka.sh")}"
# -Xmx128m needs the log cleaner's dedupe buffer cut to 8 MiB (set below), or the broker dies at
# start with an OutOfMemoryError; C1 only: ready in ~7 s instead of ~12 s on 2 loaded cores.
jvm_opts="${WAFSTREAM_KAFKA_JVM_OPTS:--Xms128m -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"

cat > "$data/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/log
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.dedupe.buffer.size=8388608
num.network.threads=2
num.io.threads=4
EOF

cat > "$data/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $data/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
[ -f "$data/server.log" ] && mv -f "$data/server.log" "$data/server.log.1"

# shellcheck disable=SC2206
java_cmd=(java $jvm_opts -XX:-UsePerfData -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$data/log4j2.properties" -cp "$lib/*")

if [ ! -f "$data/log/meta.properties" ]; then
  # URL-safe base64 of 16 random bytes, no padding: a KRaft cluster id. Passed as `-t=ID`: an
  # id that starts with '-' (1 in 64) would otherwise be read as an option.
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  "${java_cmd[@]}" kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$data/server.properties" \
    >"$data/format.log" 2>&1 || { cat "$data/format.log" >&2; exit 1; }
fi

# shellcheck source=tests/services/watchdog.sh
. "$here/watchdog.sh"
start_watchdog "$watch" "${WAFSTREAM_SERVICE_CLEANUP:+$data}"
exec "${java_cmd[@]}" kafka.Kafka "$data/server.properties"
