# Multi-stage build of the one sharedlvm binary. The build stage runs hack/build.sh, the same
# command the tests run (test/image); the runtime stages differ only in what the role needs.
#   docker build --target operator -t sharedlvm-operator .
#   docker build --target agent    -t sharedlvm-agent .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN VERSION=${VERSION} hack/build.sh /out/sharedlvm

# Operator: no LVM tools, nothing but the static binary, non-root.
FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/sharedlvm /sharedlvm
USER 65532:65532
ENTRYPOINT ["/sharedlvm", "operator"]

# Agent: runs LVM/sanlock commands in the host's namespaces via nsenter (hostPID,
# privileged; the chart's default), so it uses the host's own lvm2, lvmlockd and sanlock
# and their configuration. nsenter comes from util-linux. The same binary is the kubectl
# plugin (kubectl-sharedlvm) and the wait-locks init container.
FROM debian:12-slim AS agent
RUN apt-get update && apt-get install -y --no-install-recommends util-linux && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/sharedlvm /usr/local/bin/sharedlvm
RUN ln -s sharedlvm /usr/local/bin/kubectl-sharedlvm
ENTRYPOINT ["/usr/local/bin/sharedlvm", "agent"]
