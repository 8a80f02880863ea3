#!/usr/bin/env bash
# The Cinder driver's unit tests: Cinder's own test base drives the driver, which talks to a
# real kube-apiserver + etcd on which the real operator and three real agents run over the
# in-memory model of shared LVM (hack/local --storage=model, two VolumeGroups). Also flake8.
#   test/openstack/run-unit.sh [unittest args, e.g. test_driver.SharedLVMDriverTestCase.test_migrate_between_pools]
# Needs Debian's python3-cinder and python3-kubernetes (hack/openstack-packages.sh --unit).
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
PY=/usr/bin/python3 # Debian's interpreter: Cinder's modules are installed for it
hack/openstack-packages.sh --unit
echo "flake8 (driver and tests)"
$PY -m flake8 openstack test/openstack

KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS
work=$(mktemp -d)
bin=$work/local
go build -o "$bin" ./hack/local
kubeconfig=$work/kubeconfig
"$bin" --storage=model --samples=false --nodes=3 --volume-groups=cinder-ssd,cinder-hdd \
  --write-kubeconfig="$kubeconfig" > "$work/local.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
trap "exit 130" INT TERM
for _ in $(seq 1 600); do
  [[ -s $kubeconfig ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/local.log"; echo "the control plane exited" >&2; exit 1; }
  sleep 0.2
done
[[ -s $kubeconfig ]] || { cat "$work/local.log"; echo "no control plane after 120 s" >&2; exit 1; }
k() { "$KUBEBUILDER_ASSETS/kubectl" --kubeconfig "$kubeconfig" "$@"; }
k create namespace openstack >/dev/null
k wait --for=condition=Ready volumegroups.sharedlvm.io --all --timeout=90s >/dev/null

set +e
SHAREDLVM_KUBECONFIG=$kubeconfig PYTHONPATH=openstack:test/openstack \
  $PY -m unittest -v "${@:-test_driver}" 2>&1 | tee "$work/unit.log"
rc=${PIPESTATUS[0]}
set -e
ran=$(sed -n 's/^Ran \([0-9]*\) tests\? in \(.*\)$/\1/p' "$work/unit.log")
bad=$(grep -cE '^(FAIL|ERROR): ' "$work/unit.log" || true)
skipped=$(grep -cE ' \.\.\. skipped' "$work/unit.log" || true)
echo "openstack driver unit tests: $((${ran:-0} - bad - skipped)) passed, $bad failed, $skipped skipped"
if [[ $rc != 0 ]]; then
  echo "--- control plane log (last 40 lines)"; tail -40 "$work/local.log"
fi
exit $rc
