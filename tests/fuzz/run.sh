#!/usr/bin/env bash
# Run every fuzz target for a short while (default 60 s each; FUZZ_SECONDS to change).
#   tests/fuzz/run.sh                 # all targets
#   tests/fuzz/run.sh map_frame       # one target
# Needs cargo-fuzz (installed here if missing). cargo-fuzz wants nightly compiler flags; the
# machine's stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
secs="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_cef parse_leef parse_w3c map_frame container_open)
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz -s none "$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
