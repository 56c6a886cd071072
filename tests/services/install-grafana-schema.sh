#!/usr/bin/env bash
# TypeScript and Grafana's dashboard schema types (npm: typescript 5, @grafana/schema 13.2.3)
# into ${WAFSTREAM_CACHE:-~/.cache/wafstream}/grafana-schema-1, for checking the dashboard JSON
# with `tsc --noEmit --strict`; prints that directory (tsc is node_modules/.bin/tsc in it).
set -euo pipefail
dir="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}/grafana-schema-1"
if ! [ -x "$dir/node_modules/.bin/tsc" ] || ! [ -d "$dir/node_modules/@grafana/schema" ]; then
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent typescript@5 @grafana/schema@13.2.3 >&2)
fi
echo "$dir"
