# Everything here runs from a fresh clone: tools are built from the Go module proxy into
# $(CACHE) by hack/ scripts, never installed globally.
SHELL := /usr/bin/env bash
CACHE ?= $(or $(SHAREDLVM_CACHE),$(HOME)/.cache/sharedlvm-operator)
CONTROLLER_GEN = $(shell hack/tools.sh controller-gen)

.PHONY: all generate manifests build test run verify-generated envtest fmt vet

all: generate manifests build

generate: ## deepcopy functions from markers
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

manifests: ## CRDs and one least-privilege ClusterRole per component, from markers
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=sharedlvm-operator paths=./controllers/... output:rbac:artifacts:config=config/rbac/operator
	$(CONTROLLER_GEN) rbac:roleName=sharedlvm-agent paths=./agent/... output:rbac:artifacts:config=config/rbac/agent
	# The Helm chart ships the same generated CRDs and RBAC rules.
	cp config/crd/bases/*.yaml charts/sharedlvm-operator/crds/
	cp config/rbac/operator/role.yaml charts/sharedlvm-operator/files/operator-role.yaml
	cp config/rbac/agent/role.yaml charts/sharedlvm-operator/files/agent-role.yaml

build: ## the static binary, as the Dockerfile builds it
	hack/build.sh bin/sharedlvm

fmt:
	gofmt -l -w $$(git ls-files '*.go')

vet:
	go vet ./...

envtest: ## kube-apiserver, etcd, kubectl for envtest (built once, cached)
	@hack/envtest-binaries.sh

verify-generated: generate manifests ## fails when generated files differ from what is committed
	@hack/verify-generated.sh

test: ## the README's test command
	hack/test.sh

run: ## the README's run command
	hack/run.sh
