#!/usr/bin/env bash
# The nodes tier, from a fresh clone: the Helm chart on real kubelets in the bed's VMs
# (test/nodes, build tag "nodes"). Installs, once and as root through apt, what the nodes
# run (containerd, runc, Debian's CNI plugins, iptables for the bridge plugin's masquerade),
# then builds what is missing (envtest binaries, kubelet + kube-controller-manager +
# kube-scheduler, the images, helm; all cached) and runs the tier.
#   hack/test-nodes.sh [go test flags...]     e.g. -run TestNodesOnRealKubelets
# SHAREDLVM_NODES_SHORT=1 skips the power cycle (the README's test command's short form).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
PKGS=(containerd runc containernetworking-plugins iptables iproute2)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "test-nodes: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
hack/testbed-image.sh >/dev/null
exec go test -tags nodes -count=1 -timeout 45m -v "$@" ./test/nodes/
