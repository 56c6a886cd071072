#!/usr/bin/env bash
# check-jsonschema 0.39.0 (PyPI; bundles the Compose specification's schema) in a virtual
# environment under ${WAFSTREAM_CACHE:-~/.cache/wafstream}/check-jsonschema-1; prints the command.
set -euo pipefail
venv="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}/check-jsonschema-1"
if ! [ -x "$venv/bin/check-jsonschema" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check check-jsonschema==0.39.0 >&2
fi
echo "$venv/bin/check-jsonschema"
