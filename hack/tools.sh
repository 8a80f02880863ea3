#!/usr/bin/env bash
# Builds a pinned Go tool from the Go module proxy into the project's cache and prints its
# path. No global install: `hack/tools.sh controller-gen` is all a fresh machine needs.
set -euo pipefail
CACHE=${SHAREDLVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sharedlvm-operator}

declare -A PKG=(
  [controller-gen]=sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
  [helm]=helm.sh/helm/v3/cmd/helm@v3.22.0
)
tool=${1:?usage: hack/tools.sh TOOL}
spec=${PKG[$tool]:?unknown tool $tool}
ver=${spec##*@}
bin="$CACHE/bin/$tool-$ver"
if [[ ! -x "$bin" ]]; then
  mkdir -p "$CACHE/bin"
  echo "tools: building $spec" >&2
  GOBIN="$CACHE/bin/.build-$tool" GOFLAGS= GOTOOLCHAIN=local go install "$spec"
  mv "$CACHE/bin/.build-$tool/$tool" "$bin"
  rmdir "$CACHE/bin/.build-$tool"
fi
echo "$bin"
