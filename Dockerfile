# Multi-stage build of the one sharedlvm binary. Build stage = the same `go build` the
# tests run; the runtime stages differ only in what the role needs on PATH.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/sharedlvm .

# Operator: no LVM tools, nothing but the static binary.
FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/sharedlvm /sharedlvm
USER 65532:65532
ENTRYPOINT ["/sharedlvm", "operator"]

# Agent: runs LVM/sanlock commands in the host's namespaces via nsenter (hostPID,
# privileged), so it uses the host's own lvm2, lvmlockd and sanlock and their config.
FROM debian:12-slim AS agent
RUN apt-get update && apt-get install -y --no-install-recommends util-linux && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/sharedlvm /usr/local/bin/sharedlvm
ENTRYPOINT ["/usr/local/bin/sharedlvm", "agent", "--host-namespaces"]
