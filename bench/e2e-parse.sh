#!/usr/bin/env bash
# End-to-end `wafstream parse` throughput and memory on generated traffic, output to
# /dev/null. Prints events/s, MB/s of input and peak RSS per dataset. One mapping thread pinned
# to one core by default; THREADS=2 CPUS=0,1 measures two.
#   bench/e2e-parse.sh            # 500k lines per dataset
#   LINES=2000000 bench/e2e-parse.sh
#   THREADS=2 CPUS=0,1 bench/e2e-parse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${LINES:-500000}"; threads="${THREADS:-1}"; cpus="${CPUS:-0}"
cargo build --release --quiet
bin=target/release/wafstream
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for kind in cloud-waf securesphere; do
  "$bin" generate --kind "$kind" --count "$lines" > "$tmp/$kind.log"
  bytes=$(stat -c %s "$tmp/$kind.log")
  # Timed with the documents going to /dev/null (writing ~1 GB to a file would measure the
  # disk); a first untimed run counts them, so a broken run cannot pass for a fast one.
  docs=$("$bin" parse "$tmp/$kind.log" 2>/dev/null | wc -l)
  [ "$docs" -eq "$lines" ] || { echo "expected $lines documents, got $docs"; exit 1; }
  /usr/bin/time -f "%e %M" -o "$tmp/time" taskset -c "$cpus" "$bin" parse --threads "$threads" "$tmp/$kind.log" 2>"$tmp/err" >/dev/null || true
  read -r secs rss_kb < "$tmp/time"
  grep -q "$lines documents, 0 dead-lettered" "$tmp/err" || { echo "unexpected result: $(cat "$tmp/err")"; exit 1; }
  awk -v k="$kind" -v n="$lines" -v b="$bytes" -v s="$secs" -v r="$rss_kb" -v t="$threads" -v c="$cpus" \
    'BEGIN { printf "%-13s threads %s cpus %s  %9d events  %6.2f s  %9.0f events/s  %7.1f MB/s in  peak RSS %.0f MiB\n", k, t, c, n, s, n/s, b/s/1e6, r/1024 }'
done
