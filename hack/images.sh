#!/usr/bin/env bash
# Builds the operator, agent and pod-sandbox images without a container engine, as
# docker-archive tarballs (`ctr images import`, `docker load`), under a directory this script
# owns; prints that directory (operator.tar, agent.tar, pause.tar, refs).
#   hack/images.sh [TAG]   (default: dev-<commit>)
# What each holds is what the Dockerfile's stages produce:
#   operator: /sharedlvm (hack/build.sh's static binary), entrypoint [/sharedlvm operator],
#             user 65532:65532 (distroless's nonroot);
#   agent:    Debian bookworm's util-linux (nsenter) and coreutils (install, for the chart's
#             kill-command init container) with the libraries they load, from Debian's
#             packages, /usr/local/bin/sharedlvm and the kubectl-sharedlvm link, entrypoint
#             [/usr/local/bin/sharedlvm agent];
#   pause:    hack/imagebuild/pause, the sandbox process (registry.k8s.io/pause cannot be
#             pulled here).
# REPOSITORY (default ghcr.io/sharedlvm, the chart's) prefixes the image names.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS=${GOFLAGS:--mod=mod}
TAG=${1:-dev-$(git rev-parse --short=12 HEAD)}
REPOSITORY=${REPOSITORY:-ghcr.io/sharedlvm}
CACHE=${SHAREDLVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sharedlvm-operator}
OUT="$CACHE/images/$TAG"
log() { echo "images: $*" >&2; }
mkdir -p "$OUT"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# The agent's Debian part, cached: the packages' files, unpacked (not configured: nothing in
# them needs a maintainer script to run nsenter or install).
DEBS=(util-linux coreutils libc6 libselinux1 libpcre2-8-0 libacl1 libattr1)
debroot="$CACHE/images/agent-debian-v1"
if [[ ! -f "$debroot/.complete" ]]; then
  rm -rf "$debroot"; mkdir -p "$debroot/root" "$work/debs"
  (cd "$work/debs" && apt-get download -qq "${DEBS[@]}" >&2) || { apt-get update -qq >&2; (cd "$work/debs" && apt-get download -qq "${DEBS[@]}" >&2); }
  for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$debroot/root"; dpkg-deb -f "$d" Package Version | awk '{print $2}' | paste -sd' ' >> "$debroot/packages"; done
  rm -rf "$debroot"/root/usr/share/{doc,man,locale,info,lintian}
  touch "$debroot/.complete"
fi

VERSION=${VERSION:-$TAG} hack/build.sh "$work/sharedlvm"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" ./hack/imagebuild/pause
go build -o "$work/imagebuild" ./hack/imagebuild

mkdir -p "$work/op" "$work/agent/usr/local/bin" "$work/pause-root"
cp "$work/sharedlvm" "$work/op/sharedlvm"
cp "$work/sharedlvm" "$work/agent/usr/local/bin/sharedlvm"
ln -s sharedlvm "$work/agent/usr/local/bin/kubectl-sharedlvm"
cp "$work/pause" "$work/pause-root/pause"

"$work/imagebuild" -o "$OUT/operator.tar" -name "$REPOSITORY/sharedlvm-operator:$TAG" \
  -entrypoint '["/sharedlvm","operator"]' -user 65532:65532 "$work/op"
"$work/imagebuild" -o "$OUT/agent.tar" -name "$REPOSITORY/sharedlvm-agent:$TAG" \
  -entrypoint '["/usr/local/bin/sharedlvm","agent"]' "$debroot/root" "$work/agent"
"$work/imagebuild" -o "$OUT/pause.tar" -name "$REPOSITORY/pause:$TAG" -entrypoint '["/pause"]' -user 65535:65535 "$work/pause-root"
printf '%s\n' "$REPOSITORY/sharedlvm-operator:$TAG" "$REPOSITORY/sharedlvm-agent:$TAG" "$REPOSITORY/pause:$TAG" > "$OUT/refs"
cp "$debroot/packages" "$OUT/agent-debian-packages"
log "built $(wc -l < "$OUT/refs") images under $OUT"
echo "$OUT"
