#!/usr/bin/env bash
# Install Helm 3.22.0 for the chart tests (tests/manifests.rs): `go install` builds it from the Go
# module proxy into ${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}/go-helm-3.22.0/bin, with the module
# and build caches under $CACHE/go (5-9 min cold on 2 loaded cores; later runs only check the
# cached binary). Prints the helm binary's path on stdout, progress on stderr.
set -euo pipefail
cache="${WAFSTREAM_CACHE:-$HOME/.cache/wafstream}"
version="v3.22.0"
bindir="$cache/go-helm-${version#v}/bin"
bin="$bindir/helm"
# Helm writes its own config/cache/data dirs: keep them out of the real home.
helm_env=(HOME="$cache/go-helm-${version#v}/home" HELM_CACHE_HOME="$cache/go-helm-${version#v}/home/cache"
  HELM_CONFIG_HOME="$cache/go-helm-${version#v}/home/config" HELM_DATA_HOME="$cache/go-helm-${version#v}/home/data")
# A helm built by `go install` reports only "v3.22" as its version: a marker written after a
# finished build names the exact one.
marker="$bindir/.installed"
if [ -x "$bin" ] && [ "$(cat "$marker" 2>/dev/null)" = "$version" ] && env "${helm_env[@]}" "$bin" version --short >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "install-helm.sh: go (1.24+) not found" >&2; exit 1; }
mkdir -p "$bindir" "$cache/go"
echo "install-helm.sh: building helm $version with go install into $bindir" >&2
GOPATH="$cache/go/path" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOBIN="$bindir" \
  GOFLAGS="-modcacherw" go install "helm.sh/helm/v3/cmd/helm@$version" >&2
env "${helm_env[@]}" "$bin" version --short >&2
echo "$version" > "$marker"
echo "$bin"
