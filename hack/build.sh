#!/usr/bin/env bash
# Builds the one static sharedlvm binary. The Dockerfile's build stage runs exactly this, and
# so does the test suite (test/image), so the image's binary is the tested one.
# -buildvcs=false: the version comes from VERSION, so the same tree gives the same bytes
# whatever the GOFLAGS and wherever .git is (test/image compares them).
#   hack/build.sh [OUTPUT] (default bin/sharedlvm); VERSION=... stamps `sharedlvm version`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin/sharedlvm}
CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local} go build -trimpath -buildvcs=false \
  -ldflags "-s -w -X main.Version=${VERSION:-dev}" -o "$out" .
