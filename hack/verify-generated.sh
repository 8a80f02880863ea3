#!/usr/bin/env bash
# Fails when deepcopy, CRDs or RBAC differ from what controller-gen makes from the markers.
# Run after `make generate manifests` (the test command does both).
set -euo pipefail
cd "$(dirname "$0")/.."
stale=$(git status --porcelain -- api/ config/crd config/rbac charts/sharedlvm-operator/crds charts/sharedlvm-operator/files | grep -v '^??' || true)
untracked=$(git status --porcelain -- api/ config/crd config/rbac charts/sharedlvm-operator/crds charts/sharedlvm-operator/files | grep '^??' || true)
if [[ -n "$stale$untracked" ]]; then
  echo "generated files are stale or uncommitted; run 'make generate manifests' and commit:" >&2
  echo "$stale$untracked" >&2
  git --no-pager diff --stat -- api/ config/crd config/rbac charts/sharedlvm-operator/crds charts/sharedlvm-operator/files >&2
  exit 1
fi
echo "generated files are up to date"
