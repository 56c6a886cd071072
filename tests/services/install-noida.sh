#!/usr/bin/env bash
# Install noida-db 0.2.3 (an Elasticsearch 8 API imitation with a bundled binary) from PyPI for
# the Elasticsearch tests; prints the path of its `noida-db` command.
set -euo pipefail
# `pip show | grep -q` under pipefail fails when grep exits early: read the version first.
shown="$(python3 -m pip show noida-db 2>/dev/null || true)"
if ! grep -q '^Version: 0.2.3$' <<<"$shown"; then
  python3 -m pip install --quiet --disable-pip-version-check noida-db==0.2.3 >&2
fi
python3 - <<'PY'
import os, shutil, sysconfig
path = shutil.which("noida-db") or os.path.join(sysconfig.get_path("scripts"), "noida-db")
print(path)
PY
