#!/usr/bin/env bash
# The README's run command: a local control plane (real kube-apiserver + etcd), the CRDs,
# the operator and two node agents, each bound to a test-bed VM with real lvm2 + lvmlockd +
# sanlock sharing one LUN, and a demo (VG, volume, attach, live migration) printing the
# resources and the lock view at each step. Runs until Ctrl-C, then cleans up.
#   hack/run.sh --storage=model   the same without VMs (in-memory model; samples applied)
# The VMs need the storage tier's Debian packages (installed once, as root, by
# hack/testbed-image.sh); without them it falls back to --storage=model.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS
storage=vms
for a in "$@"; do [[ $a == --storage=* ]] && storage=${a#--storage=}; done
if [[ $storage == vms ]] && ! hack/testbed-image.sh >/dev/null; then
  echo "run: the test-bed VM image could not be prepared (see above); running on the in-memory model instead" >&2
  storage=model
fi
args=()
for a in "$@"; do [[ $a == --storage=* ]] || args+=("$a"); done
exec go run ./hack/local --storage="$storage" "${args[@]}"
