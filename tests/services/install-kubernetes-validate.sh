#!/usr/bin/env bash
# Install kubernetes-validate 1.37.0 from PyPI (it bundles the JSON schemas of Kubernetes
# 1.25-1.37, so it works offline) into a virtual environment under
# ${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}/kubernetes-validate-1.37.0, for the chart tests
# (tests/manifests.rs). Prints the path of its `kubernetes-validate` command on stdout.
set -euo pipefail
cache="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}"
venv="$cache/kubernetes-validate-1.37.0"
cmd="$venv/bin/kubernetes-validate"
# `pip show | grep -q` under pipefail fails when grep exits early: read the version first.
shown="$("$venv/bin/python" -m pip show kubernetes-validate 2>/dev/null || true)"
if ! [ -x "$cmd" ] || ! grep -q '^Version: 1.37.0$' <<<"$shown"; then
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 >&2
fi
echo "$cmd"
