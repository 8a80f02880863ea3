#!/usr/bin/env bash
# Debian's Cinder on the VM bed (real lvm2 + lvmlockd + sanlock): cinder-api/-scheduler,
# RabbitMQ, MariaDB and Glance on loopback; cinder-volume inside a bed VM (the node that sees
# the LUNs), reaching them through restricted forwards. Slow under TCG: see the README.
#   test/openstack/run-bed.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
hack/openstack-packages.sh --bed
hack/testbed-image.sh > /dev/null
KUBEBUILDER_ASSETS=$(hack/envtest-binaries.sh)
export KUBEBUILDER_ASSETS SHAREDLVM_OPENSTACK_BED=1
exec go test -tags storage -count=1 -timeout 60m -v -run TestCinderOnRealSharedLVM ./test/storage/
