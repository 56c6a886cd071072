# Shared by the Kafka benchmarks (sourced): a scratch dir and a copy of the binary, free ports and
# a benchmark broker.

# Sets `tmp` (removed at exit) and `bin` (copy_bin); at exit, stops the processes whose PIDs the
# script put in `worker`, `ingress` and `broker`.
bench_init() {
  tmp="$(mktemp -d)"
  broker=""; ingress=""; worker=""
  trap bench_cleanup EXIT
  copy_bin
}

bench_cleanup() {
  set +e
  for p in $worker $ingress; do kill "$p" 2>/dev/null; done
  [ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null
  rm -rf "$tmp"
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sets `bin` to a copy of BIN (or the release build) in $tmp, so another build in the same
# target dir cannot swap the binary mid-run.
copy_bin() {
  cp "${BIN:-${CARGO_TARGET_DIR:-target}/release/wafstream}" "$tmp/wafstream"
  bin="$tmp/wafstream"
}

# start_kafka PORT: Apache Kafka 4.4.0 (tests/services/kafka.sh, data in $tmp/kafka) as a
# benchmark broker — a larger heap and the full JIT (the tests' defaults favour start time).
# Sets `lib` (its jars) and `broker` (its PID); returns once it is ready.
start_kafka() {
  lib="$(bash tests/services/install-kafka.sh)"
  WAFSTREAM_KAFKA_LIB="$lib" WAFSTREAM_KAFKA_JVM_OPTS="${WAFSTREAM_KAFKA_JVM_OPTS:--Xms512m -Xmx512m}" \
    bash tests/services/kafka.sh "$tmp/kafka" "$1" "$(free_port)" $$ >"$tmp/kafka.out" 2>&1 &
  broker=$!
  for _ in $(seq 1200); do grep -qs "Kafka Server started" "$tmp/kafka/server.log" && break; sleep 0.1; done
  grep -qs "Kafka Server started" "$tmp/kafka/server.log" || { cat "$tmp/kafka.out"; tail -50 "$tmp/kafka/server.log"; exit 1; }
}

# listening_on KIND LOG: the address (127.0.0.1:PORT) a wafstream process logged for its KIND
# listener (tcp, metrics, ...), waiting up to 10 s for the line.
listening_on() {
  for _ in $(seq 200); do grep -q "listening on $1 " "$2" && break; sleep 0.05; done
  sed -n "s/.*listening on $1 \(127.0.0.1:[0-9]*\).*/\1/p" "$2" | head -1
}

# metric ADDR NAME: the value of an unlabelled series on ADDR's /metrics (empty when absent).
metric() { curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }
