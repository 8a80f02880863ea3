#!/usr/bin/env bash
# Builds containerd 2.x (containerd, its runc shim, ctr) from the Go module proxy and caches it
# under a directory this script owns; prints the containerd binary's path. Used to compare
# node start with Debian's containerd 1.6 (README "Running on Kubernetes"):
#   SHAREDLVM_NODES_CONTAINERD=$(hack/containerd2.sh) hack/test-nodes.sh
# Static (CGO_ENABLED=0) without the btrfs/devmapper/zfs snapshotters; runc stays Debian's.
set -euo pipefail
V=${CONTAINERD_VERSION:-2.2.9}
CACHE=${SHAREDLVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sharedlvm-operator}
OUT="$CACHE/nodes/containerd-$V"
if [[ -x "$OUT/containerd" && -x "$OUT/containerd-shim-runc-v2" ]]; then echo "$OUT/containerd"; exit 0; fi
mkdir -p "$OUT"
start=$SECONDS
for c in containerd containerd-shim-runc-v2 ctr; do
  GOBIN="$OUT" GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 \
    go install -trimpath -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$V" \
    -tags "no_btrfs no_devmapper no_zfs" "github.com/containerd/containerd/v2/cmd/$c@v$V" >&2
done
echo "containerd2: v$V built in $((SECONDS - start)) s" >&2
echo "$OUT/containerd"
