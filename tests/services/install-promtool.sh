#!/usr/bin/env bash
# promtool (Prometheus 2.42, Debian's `prometheus` package) for checking the alert rules and
# the dashboard's queries; prints its path. Installs with apt-get (as root, or with sudo).
set -euo pipefail
if ! command -v promtool >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends prometheus >&2 \
    || { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends prometheus >&2; }
fi
command -v promtool
