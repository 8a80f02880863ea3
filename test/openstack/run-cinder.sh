#!/usr/bin/env bash
# The OpenStack tier: Debian's real cinder-api, cinder-scheduler and cinder-volume (with
# RabbitMQ and MariaDB) on loopback, noauth, loading the sharedlvm driver from openstack/,
# against a local control plane (real kube-apiserver + etcd) with the real operator and three
# real agents (compute-0..2; cinder-volume "runs on" compute-2) over the in-memory model of
# shared LVM with two VolumeGroups. test/openstack/flows.py then drives Cinder over REST as
# Nova and an admin would and checks every lock on the custom resources.
#   test/openstack/run-cinder.sh         (installs the Debian packages once, as root)
# Logs stay in the printed work directory when a flow fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
PY=/usr/bin/python3
t0=$SECONDS
hack/openstack-packages.sh
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS
work=$(mktemp -d /tmp/sharedlvm-openstack.XXXXXX)
echo "work directory: $work"
go build -o "$work/local" ./hack/local
kubeconfig=$work/kubeconfig
"$work/local" --storage=model --samples=false --nodes=3 --volume-groups=cinder-ssd,cinder-hdd \
  --write-kubeconfig="$kubeconfig" > "$work/local.log" 2>&1 &
pid=$!
rc=1
cleanup() {
  test/openstack/cinder-services.sh stop "$work/cinder" || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [[ $rc == 0 ]]; then rm -rf "$work"; else echo "logs kept in $work (cinder/logs, local.log)"; fi
}
trap cleanup EXIT
trap "exit 130" INT TERM
for _ in $(seq 1 600); do
  [[ -s $kubeconfig ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/local.log"; exit 1; }
  sleep 0.2
done
k() { "$KUBEBUILDER_ASSETS/kubectl" --kubeconfig "$kubeconfig" "$@"; }
k create namespace openstack >/dev/null
k wait --for=condition=Ready volumegroups.sharedlvm.io --all --timeout=90s >/dev/null
echo "control plane, operator and agents up ($((SECONDS - t0)) s)"
t1=$SECONDS
test/openstack/cinder-services.sh start "$work/cinder" "$kubeconfig" compute-2
echo "cinder-api, cinder-scheduler, cinder-volume up with both pools ($((SECONDS - t1)) s)"
set +e
$PY test/openstack/flows.py "$kubeconfig" "$work/cinder/logs/cinder-volume.log"
rc=$?
set -e
if [[ $rc != 0 ]]; then
  grep -h -E "ERROR|Traceback" "$work"/cinder/logs/*.log | tail -30
fi
echo "openstack tier: $((SECONDS - t0)) s"
exit $rc
