#!/usr/bin/env bash
# Mapping throughput without processors and with bench/processors.yml (6 processors), one
# mapping thread pinned to one core, RUNS alternating runs each; prints every run and the
# median events/s (input lines per second) of both.
#   bench/processors.sh                 # 300k generated Cloud WAF lines, 5 runs each
#   LINES=1000000 RUNS=7 CPUS=1 bench/processors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${LINES:-300000}"; runs="${RUNS:-5}"; cpus="${CPUS:-0}"
cargo build --release --quiet
bin=target/release/wafstream
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" generate --kind cloud-waf --count "$lines" > "$tmp/in.log"
# Untimed first: the list must parse and must drop something, or the comparison means nothing.
kept=$("$bin" parse --processors bench/processors.yml "$tmp/in.log" 2>"$tmp/err" | wc -l)
grep -q "dropped by processors" "$tmp/err" || { cat "$tmp/err"; exit 1; }
echo "with the list: $kept of $lines documents kept; $(grep 'processor ' "$tmp/err" | tr '\n' ';')"
run() { # $1 = label, rest = extra args
  local label=$1; shift
  /usr/bin/time -f "%e" -o "$tmp/t" taskset -c "$cpus" "$bin" parse --threads 1 "$@" "$tmp/in.log" >/dev/null 2>/dev/null || true
  awk -v l="$label" -v n="$lines" -v s="$(cat "$tmp/t")" 'BEGIN { printf "%-5s %6.2f s  %9.0f events/s\n", l, s, n/s }' | tee -a "$tmp/$label"
}
for _ in $(seq "$runs"); do
  run none
  run list --processors bench/processors.yml
done
for label in none list; do
  awk '{ print $4 }' "$tmp/$label" | sort -n | awk -v l="$label" '{ a[NR]=$1 } END { printf "%-5s median %.0f events/s (min %.0f, max %.0f)\n", l, a[int((NR+1)/2)], a[1], a[NR] }'
done
