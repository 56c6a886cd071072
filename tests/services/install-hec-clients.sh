#!/usr/bin/env bash
# Install two stock Splunk HEC clients from PyPI into a virtual environment under
# ${WAFSTREAM_CACHE:-~/.cache/wafstream}/hec-clients-1: splunk-handler 3.0.0 (a logging handler
# posting string events as concatenated envelopes) and splunk-data-sender 0.5.0 (checks
# /services/collector/health and uses indexer acknowledgement over a request channel). Prints
# the environment's python.
set -euo pipefail
cache="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}"
venv="$cache/hec-clients-1"
if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import splunk_handler, splunk_data_sender' 2>/dev/null; then
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    splunk-handler==3.0.0 splunk-data-sender==0.5.0 >&2
fi
echo "$venv/bin/python"
