#!/usr/bin/env bash
# Soak: `wafstream run` fed at a fixed rate over TCP for a while; checks that every line came
# out (counts) and that memory stays flat (RSS sampled every 10 s; the last third of the run may
# not be more than 10 % above the first third's peak). Not part of the test suite (it takes
# minutes); run it by hand:
#   bench/soak.sh                      # 10 minutes at 2,000 lines/s
#   SECONDS_TOTAL=120 RATE=5000 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
total="${SECONDS_TOTAL:-600}"; rate="${RATE:-2000}"; kind="${KIND:-mixed}"
cargo build --release --quiet
tmp="$(mktemp -d)"
cp target/release/wafstream "$tmp/wafstream"
bin="$tmp/wafstream"
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$bin" generate --kind "$kind" --count 100000 --seed 11 > "$tmp/lines"
"$bin" run --listen-tcp 127.0.0.1:0 --listen-udp off --output "$tmp/out.ndjson" 2>"$tmp/run.log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on tcp" "$tmp/run.log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on tcp 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/run.log" | head -1)
# The sender: `rate` lines a second, cycling through the generated lines.
python3 - "$port" "$rate" "$total" "$tmp/lines" "$tmp/sent" <<'PY' &
import socket, sys, time
port, rate, total, path, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
lines = open(path, "rb").read().splitlines(keepends=True)
s = socket.create_connection(("127.0.0.1", port))
sent, start, i = 0, time.time(), 0
while time.time() - start < total:
    due = int((time.time() - start) * rate)
    while sent < due:
        s.sendall(lines[i % len(lines)]); i += 1; sent += 1
    time.sleep(0.01)
s.close()
open(out, "w").write(str(sent))
PY
sender=$!
: > "$tmp/rss"
while kill -0 "$sender" 2>/dev/null; do
  awk '/VmRSS/ {print $2}' "/proc/$pid/status" >> "$tmp/rss"
  sleep 10
done
wait "$sender"
sent=$(cat "$tmp/sent")
for _ in $(seq 600); do
  [ "$(wc -l < "$tmp/out.ndjson")" -ge "$sent" ] && break
  sleep 0.1
done
kill -TERM "$pid"; wait "$pid" || true; pid=""
got=$(wc -l < "$tmp/out.ndjson")
python3 - "$tmp/rss" "$sent" "$got" "$total" "$rate" <<'PY'
import sys
rss = [int(x) for x in open(sys.argv[1]).read().split()]
sent, got, total, rate = (int(v) for v in sys.argv[2:])
third = max(1, len(rss) // 3)
first, last = max(rss[:third]), max(rss[-third:])
print(f"soak: {total} s at {rate} lines/s: {sent} sent, {got} out; RSS KiB first third peak {first}, last third peak {last}, samples {rss}")
ok = got == sent and last <= first * 1.10
print("soak:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
