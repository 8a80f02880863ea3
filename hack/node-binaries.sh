#!/usr/bin/env bash
# Builds what the nodes tier (test/nodes) needs of Kubernetes beyond envtest's binaries, from the
# Go module proxy, and caches it under a directory this script owns; prints that directory:
#   - kube-controller-manager and kube-scheduler at the control plane's version (K8S_VERSION, the
#     same module tree as hack/envtest-binaries.sh): Deployments and DaemonSets become pods;
#   - kubelet at KUBELET_VERSION (default: the control plane's). 1.37 still runs on Debian
#     bookworm's containerd 1.6.20: containerd 1.x lacks the CRI RuntimeConfig call, and the
#     kubelet falls back to its own cgroupDriver, counting it in kubelet_cri_losing_support
#     {version="1.38.0"} (cmd/kubelet/app/server.go, getCgroupDriverFromCRI). KUBELET_VERSION=1.35.4
#     (the last without that deprecation) also passes the nodes tier.
# First run after hack/envtest-binaries.sh (same module tree, shared build cache): ~1.5 min on
# 2 cores; 1.35.4 alone compiles its own tree (~8 min). Cached run: well under a second.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.2}
KUBELET_VERSION=${KUBELET_VERSION:-$K8S_VERSION}
CACHE=${SHAREDLVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sharedlvm-operator}
OUT="$CACHE/nodes/k8s-$K8S_VERSION-kubelet-$KUBELET_VERSION"
if [[ -x "$OUT/kube-controller-manager" && -x "$OUT/kube-scheduler" && -x "$OUT/kubelet" ]]; then
  echo "$OUT"; exit 0
fi
log() { echo "node-binaries: $*" >&2; }
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$OUT"
build="$CACHE/nodes/build"

# module DIR VERSION: a throwaway module requiring k8s.io/kubernetes@vVERSION with each ./staging
# module replaced by its published k8s.io/X v0.MINOR.PATCH (as hack/envtest-binaries.sh does).
module() {
  local dir=$1 v=$2 gomod
  mkdir -p "$dir"
  [[ -f "$dir/go.mod" ]] && return 0
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@v$v"; exit 1; }
  {
    echo "module sharedlvm.local/nodes-build"
    echo "go 1.26"
    echo "require k8s.io/kubernetes v$v"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk -v v="v0.${v#*.}" '{print "replace " $1 " => " $1 " " v}'
  } > "$dir/go.mod.tmp"
  shift 2
  {
    echo "//go:build tools"; echo; echo "package tools"; echo; echo "import ("
    for p in "$@"; do echo "	_ \"$p\""; done
    echo ")"
  } > "$dir/tools.go"
  mv "$dir/go.mod.tmp" "$dir/go.mod"
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
}
ldflags() {
  local v=$1 minor=${1#*.}; minor=${minor%%.*}
  echo "-s -w -X k8s.io/component-base/version.gitVersion=v$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
}
build1() { # DIR VERSION CMD
  local start=$SECONDS
  log "building $3 v$2"
  (cd "$1" && go build -trimpath -ldflags "$(ldflags "$2")" -o "$OUT/$3.tmp" "k8s.io/kubernetes/cmd/$3")
  mv "$OUT/$3.tmp" "$OUT/$3"
  log "$3 built in $((SECONDS - start)) s"
}

cp_dir="$build/k8s-$K8S_VERSION"
module "$cp_dir" "$K8S_VERSION" k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
[[ -x "$OUT/kube-controller-manager" ]] || build1 "$cp_dir" "$K8S_VERSION" kube-controller-manager
[[ -x "$OUT/kube-scheduler" ]] || build1 "$cp_dir" "$K8S_VERSION" kube-scheduler
kl_dir="$build/kubelet-$KUBELET_VERSION"
module "$kl_dir" "$KUBELET_VERSION" k8s.io/kubernetes/cmd/kubelet
[[ -x "$OUT/kubelet" ]] || build1 "$kl_dir" "$KUBELET_VERSION" kubelet
echo "$OUT"
