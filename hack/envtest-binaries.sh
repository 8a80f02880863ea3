#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl for envtest from the Go module proxy (the usual
# envtest download site is unreachable here) and caches them, keyed by version, under a
# directory this script owns. Prints the directory holding the three binaries.
# First run: ~6-8 min on 2 cores (kube-apiserver dominates); cached run: well under a second.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
CACHE=${SHAREDLVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sharedlvm-operator}
OUT="$CACHE/envtest/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" && -x "$OUT/kubectl" ]]; then
  echo "$OUT"; exit 0
fi

log() { echo "envtest-binaries: $*" >&2; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$OUT"
build="$CACHE/envtest/build"
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"

# kube-apiserver and kubectl: a throwaway module that requires k8s.io/kubernetes and replaces
# each of its ./staging modules with the published k8s.io/X v0.MINOR.PATCH.
kdir="$build/k8s-$K8S_VERSION"
if [[ ! -x "$OUT/kube-apiserver" || ! -x "$OUT/kubectl" ]]; then
  mkdir -p "$kdir"
  start=$SECONDS
  gomod=$(cd "$kdir" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
  {
    echo "module sharedlvm.local/envtest-build"
    echo "go 1.26"
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" \
      | awk -v v="v0.${K8S_VERSION#*.}" '{print "replace " $1 " => " $1 " " v}'
  } > "$kdir/go.mod"
  cat > "$kdir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
  (cd "$kdir" && go mod tidy -e >/dev/null 2>&1 || true)
  log "building kube-apiserver v$K8S_VERSION (about 5 min on 2 cores)"
  (cd "$kdir" && go build -trimpath -ldflags "$ldflags" -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"
  log "building kubectl v$K8S_VERSION"
  (cd "$kdir" && go build -trimpath -ldflags "$ldflags" -o "$OUT/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
  mv "$OUT/kubectl.tmp" "$OUT/kubectl"
  log "kube-apiserver + kubectl built in $((SECONDS - start)) s"
fi

if [[ ! -x "$OUT/etcd" ]]; then
  edir="$build/etcd-$ETCD_VERSION"
  mkdir -p "$edir"
  start=$SECONDS
  cat > "$edir/go.mod" <<GOMOD
module sharedlvm.local/etcd-build
go 1.26
require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
  cat > "$edir/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$edir" && go mod tidy -e >/dev/null 2>&1 || true)
  log "building etcd v$ETCD_VERSION"
  (cd "$edir" && go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$OUT/etcd.tmp" "$OUT/etcd"
  log "etcd built in $((SECONDS - start)) s"
fi
echo "$OUT"
