#!/usr/bin/env bash
# The README's test command: hygiene (gofmt, go vet), generated files up to date, then every
# unit and envtest suite. Needs only Go and the network to the Go module proxy; builds the
# envtest binaries on first use (~6 min on 2 cores) and caches them.
# Then the storage tier: real lvm2 + lvmlockd + sanlock in qemu VMs sharing LUN images
# (test/storage, build tag "storage"; ~12 min; needs root to install Debian packages once).
# Set SHAREDLVM_STORAGE_TIER=0 to skip it. The Cinder driver's unit tests and the OpenStack
# tier (Debian's Cinder services, ~6 min of packages the first time) run before it;
# SHAREDLVM_OPENSTACK_TIER=0 skips the latter. After the storage tier, the bench tier's short
# form (SHAREDLVM_BENCH_TIER=0 skips it). Last, the nodes tier's short form: the Helm
# chart on real kubelets in the VMs (hack/test-nodes.sh; builds kubelet, kube-controller-manager
# and kube-scheduler once); SHAREDLVM_NODES_TIER=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
start=$SECONDS
step() { echo; echo "== $* ($((SECONDS - start)) s)"; }

step "tracked files (no build outputs: nothing over 1 MiB outside testdata/fixtures)"
big=$(git ls-files -z | xargs -0 -r stat -c '%s %n' | awk '$1 > 1048576 {print $2" ("$1" bytes)"}' | grep -v -E '(^|/)(testdata|fixtures)/' || true)
if [[ -n "$big" ]]; then echo "tracked files over 1 MiB (build outputs? git rm --cached them and ignore them): $big" >&2; exit 1; fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n "$unformatted" ]]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi

step "go vet"
go vet ./...

step "generated files (controller-gen from markers)"
make -s generate manifests
hack/verify-generated.sh

step "envtest binaries"
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS

step "go test (unit + envtest)"
# -p 1: envtest suites each start an apiserver; on 2 cores they are faster one at a time.
logdir=$(mktemp -d)
go test -p 1 -count=1 ./... 2>&1 | tee "$logdir/go-test.log"

# suite NAME LOG SHOW CMD...: runs a non-Go suite, prints SHOW (a grep -E pattern) of its log
# (all of its tail on failure) and records ok/FAIL beside the Go packages.
suite() {
  local name=$1 log=$logdir/$2 show=$3
  shift 3
  if "$@" > "$log" 2>&1; then
    grep -E "$show" "$log" | grep -v 'pool capabilities' || true
    echo "ok   $name" >> "$logdir/go-test.log"
  else
    tail -80 "$log"
    echo "FAIL $name" >> "$logdir/go-test.log"
  fi
}

step "OpenStack: the Cinder driver's unit tests against the operator and agents (test/openstack/run-unit.sh)"
suite "openstack/sharedlvm_cinder (unit)" openstack-unit.log 'unit tests:' test/openstack/run-unit.sh

if [[ "${SHAREDLVM_OPENSTACK_TIER:-1}" != 0 ]]; then
  step "OpenStack tier: Debian's real Cinder services with the driver (test/openstack/run-cinder.sh)"
  suite "openstack tier (Cinder)" openstack-tier.log '^\[|^\||flows:|tier:' test/openstack/run-cinder.sh
fi

if [[ "${SHAREDLVM_STORAGE_TIER:-1}" != 0 ]]; then
  step "storage tier image (Debian packages, kernel, initramfs; cached)"
  hack/testbed-image.sh >/dev/null
  step "storage tier: real shared LVM in VMs (go test -tags storage ./test/storage/)"
  # The chaos tier's short form (its full run: 50 rounds, README "Fault tolerance").
  export SHAREDLVM_CHAOS_ROUNDS="${SHAREDLVM_CHAOS_ROUNDS:-6}"
  set +e
  go test -tags storage -p 1 -count=1 -timeout 40m -v ./test/storage/... 2>&1 | tee "$logdir/storage.log" \
    | grep --line-buffered -E '^(=== RUN|--- |\s+--- |ok |FAIL|PASS|panic)|timings|^\s+\| |took|attempt|kept in|chaos|round [0-9]+/|recovery'
  rc=${PIPESTATUS[0]}
  set -e
  grep -E '^(ok|FAIL|---)' "$logdir/storage.log" >> "$logdir/go-test.log" || true
  if [[ $rc != 0 ]]; then
    tail -60 "$logdir/storage.log"
    echo "storage tier failed; the VM console logs are in the directory named above" >&2
    exit 1
  fi
fi
if [[ "${SHAREDLVM_STORAGE_TIER:-1}" != 0 && "${SHAREDLVM_BENCH_TIER:-1}" != 0 ]]; then
  step "bench tier, short form: each operation against the raw command, 5 of each, #18 target 5 asserted (SHAREDLVM_BENCH_SHORT=1 hack/bench.sh; full run: hack/bench.sh)"
  suite "bench tier (short form)" bench.log '^\s+\| |^(---|ok|FAIL|PASS)|target missed' \
    env SHAREDLVM_BENCH_SHORT=1 hack/bench.sh
fi
if [[ "${SHAREDLVM_NODES_TIER:-1}" != 0 ]]; then
  step "nodes tier, short form: the chart on real kubelets in the VMs (hack/test-nodes.sh; full run without SHAREDLVM_NODES_SHORT)"
  suite "nodes tier (kubelets + helm chart)" nodes.log 'timings|^(---|ok|FAIL|PASS)|checked|refused|scraped|uninstall' \
    env SHAREDLVM_NODES_SHORT="${SHAREDLVM_NODES_SHORT:-1}" hack/test-nodes.sh
fi

summary=$(grep -cE '^ok ' "$logdir/go-test.log" || true)
failed=$(grep -cE '^(FAIL|--- FAIL)' "$logdir/go-test.log" || true)
echo
echo "total time: $((SECONDS - start)) s"
echo "packages: ${summary} passed, ${failed} failed"
[[ $failed == 0 ]]
