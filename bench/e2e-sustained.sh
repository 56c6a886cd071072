#!/usr/bin/env bash
# The whole pipeline under a steady load, as issue 14 states the target: a paced sender
# (bench/pace.py, one TCP connection, RATE lines/s for SECONDS) → `wafstream ingress` → Apache
# Kafka 4.4 (single node, started here) → one `wafstream worker` → the output topics. Everything
# shares this machine's cores, unpinned. Reports:
# - whether the sender kept the pace (the ingress pushes back by not reading);
# - zero loss, checked at the output: the output topics' record count (their end offsets) must
#   equal the lines sent, with nothing dead-lettered;
# - receive → output-acknowledged latency p50/p99/max bucket, from the worker's
#   wafstream_delivery_latency_seconds histogram (the ingress stamps the receive time);
# - the worker's rate, and the peak RSS of the ingress and the worker;
# - a new worker's start → partitions assigned (its /readyz) → first document acknowledged (its
#   first offset stored), polled every 20 ms.
#   bench/e2e-sustained.sh                      # 150k Cloud WAF lines/s for 60 s
#   RATE=100000 SECONDS_=30 bench/e2e-sustained.sh
#   WORKER_EXTRA="--threads 1" bench/e2e-sustained.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${RATE:-150000}"; secs="${SECONDS_:-60}"; kind="${KIND:-cloud-waf}"; parts="${PARTITIONS:-4}"
[ -n "${BIN:-}" ] || cargo build --release --quiet
source bench/kafka-lib.sh
bench_init
port=$(free_port)
start_kafka "$port"
java -cp "$lib/*" tests/services/kafka/CreateTopics.java "127.0.0.1:$port" raw:$parts ss:${OUT_PARTITIONS:-1} cloud:${OUT_PARTITIONS:-1} siem:1 dlq:1
"$bin" generate --kind "$kind" --count "${FILE_LINES:-200000}" > "$tmp/lines"

"$bin" ingress --brokers 127.0.0.1:$port --raw-topic raw \
  --listen-tcp 127.0.0.1:0 --listen-udp off --metrics-addr 127.0.0.1:0 ${INGRESS_EXTRA:-} 2>"$tmp/ingress.log" &
ingress=$!
"$bin" worker --brokers 127.0.0.1:$port --raw-topic raw \
  --topic-securesphere ss --topic-cloud-waf cloud --topic-siem siem --dlq-topic dlq --group bench \
  --metrics-addr 127.0.0.1:0 --exit-when-idle-ms 5000 ${WORKER_EXTRA:-} 2>"$tmp/worker.log" &
worker=$!
iaddr=$(listening_on tcp "$tmp/ingress.log")
imetrics=$(listening_on metrics "$tmp/ingress.log")
wmetrics=$(listening_on metrics "$tmp/worker.log")
# Wait for the worker's partitions before sending, so the latency is the pipeline's, not the group join's.
for _ in $(seq 300); do curl -sf "http://$wmetrics/readyz" >/dev/null && break; sleep 0.1; done
# A timeline every TICK seconds (default 5): frames the ingress got and Kafka acknowledged,
# records the worker consumed and settled, its outputs in flight and pauses.
(
  t=0
  while sleep "${TICK:-5}"; do
    t=$((t + ${TICK:-5}))
    echo "t=${t}s ingress received $(metric "$imetrics" wafstream_ingress_frames_total) published $(metric "$imetrics" wafstream_raw_produced_total)" \
      "| worker consumed $(metric "$wmetrics" wafstream_worker_consumed_total) settled $(metric "$wmetrics" wafstream_worker_offsets_stored_total)" \
      "in flight $(metric "$wmetrics" wafstream_worker_inflight) pauses $(metric "$wmetrics" wafstream_worker_pauses_total)"
  done
) &
timeline=$!
python3 bench/pace.py "$iaddr" "$tmp/lines" "$rate" "$secs" | tee "$tmp/pace.out"
sent=$(awk '{ print $2 }' "$tmp/pace.out")
# Peak RSS (kB) of a running process.
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
# The worker stops once idle for 5 s; keep its last scrape and peak RSS.
while kill -0 "$worker" 2>/dev/null; do
  curl -sf "http://$wmetrics/metrics" > "$tmp/m.new" 2>/dev/null && mv "$tmp/m.new" "$tmp/metrics"
  r=$(hwm "$worker"); [ -n "$r" ] && echo "$r" > "$tmp/worker.rss"
  sleep 0.5
done
hwm "$ingress" > "$tmp/ingress.rss"
kill "$timeline" 2>/dev/null
wait "$worker" || { tail -20 "$tmp/worker.log"; exit 1; }
worker=""
kill -TERM "$ingress"; wait "$ingress" || true; ingress=""
grep -q "$sent frames published, 0 failed" "$tmp/ingress.log" || { tail -5 "$tmp/ingress.log"; echo "ingress did not publish $sent frames"; exit 1; }
java -cp "$lib/*" tests/services/kafka/EndOffsets.java "127.0.0.1:$port" ss cloud siem dlq > "$tmp/ends"
out=$(awk '$1 != "dlq" { n += $2 } END { print n }' "$tmp/ends"); dlq=$(awk '$1 == "dlq" { print $2 }' "$tmp/ends")
echo "output topics hold $out documents for $sent lines sent, $dlq dead letters: $([ "$out" = "$sent" ] && [ "$dlq" = 0 ] && echo "no loss" || echo "MISMATCH")"
awk -F'[{}" ]+' '
  /^wafstream_delivery_latency_seconds_bucket/ { le[n] = $3; c[n++] = $NF }
  /^wafstream_delivery_latency_seconds_count/ { total = $NF }
  END {
    split("0.5 0.99 1", qs, " ")
    for (q = 1; q <= 3; q++) for (i = 0; i < n; i++) if (c[i] >= qs[q] * total) { printf "latency p%s <= %s s  ", qs[q] * 100, le[i]; break }
    printf "(%d frames)\n", total
  }' "$tmp/metrics"
grep "worker consumed" "$tmp/worker.log" | sed 's/.*INFO wafstream: //'
# A second worker in a new group over the now full raw topic: its partitions assigned (readyz) →
# its first offset stored (the first document acknowledged by the output topic), polled every 20 ms.
"$bin" worker --brokers 127.0.0.1:$port --raw-topic raw --topic-securesphere ss --topic-cloud-waf cloud \
  --topic-siem siem --dlq-topic dlq --group bench-first --metrics-addr 127.0.0.1:0 2>"$tmp/worker2.log" &
worker=$!
t0=$(date +%s.%N)
w2=$(listening_on metrics "$tmp/worker2.log")
for _ in $(seq 1500); do curl -sf "http://$w2/readyz" >/dev/null && break; sleep 0.02; done
t1=$(date +%s.%N)
for _ in $(seq 1500); do
  [ "$(metric "$w2" wafstream_worker_offsets_stored_total)" -gt 0 ] 2>/dev/null && break
  sleep 0.02
done
t2=$(date +%s.%N)
kill -TERM "$worker"; wait "$worker" || true; worker=""
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "new worker: started → partitions assigned %.2f s, assigned → first document acknowledged %.2f s\n", b - a, c - b }'
echo "peak RSS: ingress $(( $(cat "$tmp/ingress.rss") / 1024 )) MiB, worker $(( $(cat "$tmp/worker.rss") / 1024 )) MiB"
