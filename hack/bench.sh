#!/usr/bin/env bash
# Bench tier: each operation through the custom resources next to the raw LVM command doing
# the same work on the same test-bed VM host and VG, in the same run, and five boot restores
# (several VGs, 500 attachments, conflicts, a planned reboot) against lvmlockd's floor; keeps
# the tables in bench/results/bench-<time>.md and fails when one of #18's targets is missed
# (README "Performance and scale"). ~35–45 min on 2 cores. SHAREDLVM_BENCH_SHORT=1: the short
# form the README's test command runs (single operations, 5 of each, target 5; ~1.5 min).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS
hack/testbed-image.sh >/dev/null
go test -tags storage,bench -count=1 -timeout 90m -v -run TestBenchRatiosOnRealSharedLVM ./test/storage/ \
  | grep --line-buffered -vE '^\s*$'
