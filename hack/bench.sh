#!/usr/bin/env bash
# Bench tier: each operation through the custom resources next to the raw LVM command doing
# the same work on the same test-bed VM host and VG, in the same run; prints the ratio table
# and keeps it in bench/results/bench-<time>.md. ~10 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS
hack/testbed-image.sh >/dev/null
go test -tags storage,bench -count=1 -timeout 90m -v -run TestBenchRatiosOnRealSharedLVM ./test/storage/ \
  | grep --line-buffered -vE '^\s*$'
