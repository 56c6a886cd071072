#!/usr/bin/env bash
# One worker's throughput against a local broker: Apache Kafka 4.4.0 (single-node KRaft, started
# by tests/services/kafka.sh; the default) or tansu 0.6.0 in memory (BROKER=tansu, for
# comparison). The raw topic is filled through `wafstream ingress` (TCP), then one
# `wafstream worker` maps it all and exits when idle; it reports events/s over its active time
# (first record consumed → last output acknowledged). Counts are checked so a broken run cannot
# pass for a fast one.
#   bench/e2e-kafka.sh                  # 200k Cloud WAF lines, 4 raw partitions, Apache Kafka
#   LINES=500000 KIND=mixed bench/e2e-kafka.sh
#   BROKER=tansu bench/e2e-kafka.sh
#   THREADS=2 CPUS=0,1 bench/e2e-kafka.sh   # the worker maps on two threads over two cores
#   BIN=/path/to/other/wafstream bench/e2e-kafka.sh   # another build (e.g. an older commit;
#                                                     # THREADS must stay unset before --threads)
#   WORKER_EXTRA="--kafka statistics.interval.ms=0" bench/e2e-kafka.sh   # extra worker flags
# It also reports the ingress's own rate (INGRESS_CPUS, default cpu 1).
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${LINES:-200000}"; kind="${KIND:-cloud-waf}"; parts="${PARTITIONS:-4}"; broker_kind="${BROKER:-kafka}"
threads="${THREADS:-1}"; cpus="${CPUS:-0}"
# --threads exists since the pipeline core; older builds map on one thread whatever is asked.
threads_arg=(--threads "$threads"); [ -n "${BIN:-}" ] && [ -z "${THREADS:-}" ] && threads_arg=()
[ -n "${BIN:-}" ] || cargo build --release --quiet
source bench/kafka-lib.sh
bench_init
port=$(free_port)
t0=$(date +%s.%N)
case "$broker_kind" in
  kafka)
    start_kafka "$port"
    java -cp "$lib/*" tests/services/kafka/CreateTopics.java "127.0.0.1:$port" raw:$parts ss:${OUT_PARTITIONS:-1} cloud:${OUT_PARTITIONS:-1} dlq:1
    ;;
  tansu)
    tansu="$(bash tests/services/install-tansu.sh)"
    "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >"$tmp/tansu.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    for t in raw ss cloud dlq; do
      p=1; [ $t = raw ] && p=$parts
      "$tansu" topic create --broker "tcp://127.0.0.1:$port" --partitions $p $t >/dev/null
    done
    ;;
  *) echo "BROKER=$broker_kind: kafka or tansu" >&2; exit 2 ;;
esac
echo "$broker_kind broker ready with topics in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s" >&2
"$bin" generate --kind "$kind" --count "$lines" > "$tmp/lines"
# The ingress on its own core (INGRESS_CPUS, default 1; the broker shares the machine): its rate
# is from the first byte sent to the broker's acknowledgement of the last frame (polled on its
# /metrics), over one TCP connection.
taskset -c "${INGRESS_CPUS:-1}" "$bin" ingress --brokers 127.0.0.1:$port --raw-topic raw --listen-tcp 127.0.0.1:0 --listen-udp off \
  --metrics-addr 127.0.0.1:0 2>"$tmp/ingress.log" &
ingress=$!
iaddr=$(listening_on tcp "$tmp/ingress.log")
maddr=$(listening_on metrics "$tmp/ingress.log")
produced() { metric "$maddr" wafstream_raw_produced_total; }
i0=$(date +%s.%N)
cat "$tmp/lines" > /dev/tcp/${iaddr%:*}/${iaddr##*:}
for _ in $(seq 6000); do [ "$(produced)" = "$lines" ] && break; sleep 0.01; done
i1=$(date +%s.%N)
[ "$(produced)" = "$lines" ] || { echo "the ingress published $(produced) of $lines"; exit 1; }
awk -v n="$lines" -v s="$(echo "$i1 - $i0" | bc)" -v c="${INGRESS_CPUS:-1}" \
  'BEGIN { printf "ingress (TCP, one connection, cpu %s): %d frames acknowledged by the broker in %.2f s = %.0f frames/s\n", c, n, s, n/s }'
kill -TERM $ingress; wait $ingress || true
grep -q "$lines frames published, 0 failed" "$tmp/ingress.log" || { cat "$tmp/ingress.log"; exit 1; }
/usr/bin/time -f "%M %U %S" -o "$tmp/rss" taskset -c "$cpus" "$bin" worker "${threads_arg[@]}" --brokers 127.0.0.1:$port --raw-topic raw \
  --topic-securesphere ss --topic-cloud-waf cloud --dlq-topic dlq --group bench --exit-when-idle-ms 3000 ${WORKER_EXTRA:-} \
  2>"$tmp/worker.log"
grep -q "worker consumed $lines, " "$tmp/worker.log" || { cat "$tmp/worker.log"; exit 1; }
read -r rss_kb user sys < "$tmp/rss"
echo "$kind, $lines lines, $parts raw partitions, $broker_kind broker, worker on $threads mapping thread(s) pinned to cpu(s) $cpus, peak RSS $(( rss_kb / 1024 )) MiB," \
  "CPU $(awk -v u="$user" -v s="$sys" -v n="$lines" 'BEGIN { printf "%.1f µs per event (%.2f s user, %.2f s system)", (u + s) * 1e6 / n, u, s }'):"
grep "worker consumed" "$tmp/worker.log"
