#!/usr/bin/env bash
# The README's test command: hygiene (gofmt, go vet), generated files up to date, then every
# unit and envtest suite. Needs only Go and the network to the Go module proxy; builds the
# envtest binaries on first use (~6 min on 2 cores) and caches them.
# Set SHAREDLVM_STORAGE_TIER=0 to skip the VM storage tier (it is on by default).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local GOFLAGS=${GOFLAGS:--mod=mod}
start=$SECONDS
step() { echo; echo "== $* ($((SECONDS - start)) s)"; }

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
go test -p 1 -count=1 ./... 2>&1 | tee /tmp/sharedlvm-go-test.log
summary=$(grep -cE '^ok ' /tmp/sharedlvm-go-test.log || true)
failed=$(grep -cE '^(FAIL|--- FAIL)' /tmp/sharedlvm-go-test.log || true)
echo
echo "total time: $((SECONDS - start)) s"
echo "packages: ${summary} passed, ${failed} failed"
