#!/usr/bin/env bash
# Run every fuzz target for a short while (default 60 s each; FUZZ_SECONDS to change), starting
# from the committed seeds in tests/fuzz/seeds/<target>/ (copied to a scratch corpus, so a run
# never changes the checkout). `.ci/run` runs it with FUZZ_SECONDS=30 FUZZ_SEED=1; a longer run:
#   FUZZ_SECONDS=600 tests/fuzz/run.sh            # all targets, 10 min each
#   tests/fuzz/run.sh map_frame                   # one target
# Needs cargo-fuzz: installed into ${WAFSTREAM_CACHE:-~/.cache/wafstream}/cargo-fuzz if missing.
# cargo-fuzz wants nightly compiler flags; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1. A crash fails the run and leaves the input under tests/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}"
root="$cache/cargo-fuzz-0.13"
if ! command -v cargo-fuzz >/dev/null && [ ! -x "$root/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --version 0.13.1 --locked --root "$root" >&2
fi
export PATH="$root/bin:$PATH"
secs="${FUZZ_SECONDS:-60}"
# A fixed seed (CI sets FUZZ_SEED=1) explores the same inputs on every machine, so a run that
# passed here cannot fail there by chance; 0 = a new random seed each run.
seed="${FUZZ_SEED:-0}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_cef parse_leef parse_w3c map_frame container_open)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  mkdir -p "$scratch/$t"
  cp tests/fuzz/seeds/"$t"/* "$scratch/$t/"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz -s none "$t" "$scratch/$t" -- \
    -max_total_time="$secs" -seed="$seed" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | grep -E "^(#|==|stat::number_of_executed_units|stat::peak_rss|INFO: seed|.*(ERROR|panicked|SUMMARY|crash))" | tail -5
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz target $t failed"; exit 1; }
done
