#!/usr/bin/env bash
# Install s3s-fs 0.14.1 (an S3 API server over a folder: objects are plain files, SigV4 signatures
# are verified) from crates.io for the S3 tests; prints the path of its binary. The first install
# builds it (2–11 min on 2 cores, by load; 0.17 needs a newer rustc); later runs only check the cached binary.
set -euo pipefail
root="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}/s3s-fs-0.14.1"
bin="$root/bin/s3s-fs"
if ! [ -x "$bin" ] || ! "$bin" --help >/dev/null 2>&1; then
  cargo install s3s-fs --version 0.14.1 --locked --features binary --root "$root" \
    --target-dir "$root/target" >&2
  rm -rf "$root/target"
fi
echo "$bin"
