#!/usr/bin/env bash
# One worker's throughput against a local Kafka-protocol broker (tansu, in memory): the raw
# topic is filled through `wafstream ingress` (TCP), then one `wafstream worker` maps it all and
# exits when idle; it reports events/s over its active time (first record consumed → last
# output acknowledged). Counts are checked so a broken run cannot pass for a fast one.
#   bench/e2e-kafka.sh                  # 200k Cloud WAF lines, 4 raw partitions
#   LINES=500000 KIND=mixed bench/e2e-kafka.sh
#   THREADS=2 CPUS=0,1 bench/e2e-kafka.sh   # the worker maps on two threads over two cores
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${LINES:-200000}"; kind="${KIND:-cloud-waf}"; parts="${PARTITIONS:-4}"
threads="${THREADS:-1}"; cpus="${CPUS:-0}"
cargo build --release --quiet
bin=target/release/wafstream
tansu="$(bash tests/services/install-tansu.sh)"
tmp="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"$tmp/tansu.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; kill ${ingress:-} 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
for t in raw ss cloud dlq; do
  p=1; [ $t = raw ] && p=$parts
  "$tansu" topic create --broker "tcp://127.0.0.1:$port" --partitions $p $t >/dev/null
done
"$bin" generate --kind "$kind" --count "$lines" > "$tmp/lines"
"$bin" ingress --brokers 127.0.0.1:$port --raw-topic raw --listen-tcp 127.0.0.1:0 --listen-udp off 2>"$tmp/ingress.log" &
ingress=$!
for _ in $(seq 100); do grep -q "listening on tcp" "$tmp/ingress.log" && break; sleep 0.1; done
iport=$(sed -n 's/.*listening on tcp 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/ingress.log")
cat "$tmp/lines" > /dev/tcp/127.0.0.1/$iport
sleep 1
kill -TERM $ingress; wait $ingress || true
grep -q "$lines frames published, 0 failed" "$tmp/ingress.log" || { cat "$tmp/ingress.log"; exit 1; }
/usr/bin/time -f "%M" -o "$tmp/rss" taskset -c "$cpus" "$bin" worker --threads "$threads" --brokers 127.0.0.1:$port --raw-topic raw \
  --topic-securesphere ss --topic-cloud-waf cloud --dlq-topic dlq --group bench --exit-when-idle-ms 3000 \
  2>"$tmp/worker.log"
grep -q "worker consumed $lines, " "$tmp/worker.log" || { cat "$tmp/worker.log"; exit 1; }
echo "$kind, $lines lines, $parts raw partitions, worker on $threads mapping thread(s) pinned to cpu(s) $cpus, peak RSS $(( $(cat "$tmp/rss") / 1024 )) MiB:"
grep "worker consumed" "$tmp/worker.log"
