#!/usr/bin/env bash
# The README's run command: a local control plane (real kube-apiserver + etcd), the CRDs,
# the operator and two node agents, with the samples applied. Runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS
exec go run ./hack/local "$@"
