#!/usr/bin/env bash
# Scale harness (no VMs): the real operator in its own process against an envtest apiserver,
# 100 simulated nodes each running the real agent over internal/fakelvm, 1,000 then 10,000
# volumes through create → attach → live migration → detach → delete. Prints the table and
# writes it with a PNG plot to bench/results/. Extra flags go to hack/scale (see -h).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS
exec go run ./hack/scale "$@"
