# m2m-operator. `make dev` runs the whole system on a local control plane; `make test` runs every check.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

CONTROLLER_GEN := go tool controller-gen
# The control plane binaries (kube-apiserver, etcd, kubectl) are built once per user and cached;
# hack/control-plane.sh prints their directory, building them first when they are missing.

.PHONY: all
all: build

##@ Generate

.PHONY: manifests
manifests: ## Regenerate the CRD and RBAC manifests from the API types and markers.
	$(CONTROLLER_GEN) rbac:roleName=m2m-manager crd paths="./..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: ## Regenerate the deepcopy code of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: chart
chart: ## Regenerate what charts/m2m-operator copies from config/ (CRDs, the manager's RBAC rules, static policies).
	hack/gen-chart.sh

.PHONY: verify-generated
verify-generated: ## Fail when the committed generated files differ from fresh output.
	hack/verify-generated.sh

##@ Build and test

.PHONY: build
build: ## Build the binaries into bin/.
	go build -o bin/ ./cmd/...

IMG ?= ghcr.io/m2m-dev/m2m-operator:dev
ARCH ?= amd64

.PHONY: image
image: ## Build the container image as a tarball, bin/m2m-operator-image.tar, with no container engine (docker load or crane push it).
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) go build -trimpath -ldflags "-s -w" -o bin/linux/ ./cmd/manager ./cmd/token-server ./cmd/kubectl-m2m
	go run ./hack/image -bin bin/linux -arch $(ARCH) -tag $(IMG) -o bin/m2m-operator-image.tar

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine; not part of make test).
	docker build -t $(IMG) .

.PHONY: control-plane
control-plane: ## Build (once) and print the directory of kube-apiserver, etcd and kubectl.
	@hack/control-plane.sh

.PHONY: vet
vet:
	go vet ./...

.PHONY: test
test: verify-generated vet ## Everything CI checks: generated files, vet, unit and envtest integration tests.
	assets="$$(hack/control-plane.sh)"; helm="$$(hack/helm.sh)"; crds="$$(hack/optional-crds.sh)"; KUBEBUILDER_ASSETS="$$assets" M2M_HELM="$$helm" M2M_OPTIONAL_CRDS="$$crds" CGO_ENABLED=0 go test -count=1 ./...

.PHONY: bench-controller
bench-controller: ## Controller scale benchmark (N=1000 by default); results belong in docs/benchmarks.md.
	assets="$$(hack/control-plane.sh)"; KUBEBUILDER_ASSETS="$$assets" go run ./hack/bench-controller -n $(or $(N),1000)

.PHONY: bench-token
bench-token: ## Token server benchmark (10,000 clients, wrk at 16 connections, the issuance limit off and on, then one client flooding); results belong in docs/benchmarks.md.
	hack/bench-token.sh

.PHONY: bench-peers
bench-peers: ## Ory Hydra v2.3.0 (built from its Go module source; on SQLite and PostgreSQL, opaque and JWT tokens) and this token server, 1,000 clients each, the same wrk load one after the other (BENCH_PEERS_FLAGS=...); results belong in docs/benchmarks.md. Not part of make test.
	hack/bench-peers.sh $(BENCH_PEERS_FLAGS)

.PHONY: bench-dpop
bench-dpop: ## Token server with the Go load generator, plain and with a fresh DPoP proof per request, in the same session (bench-token -dpop; 10,000 clients, 16 connections, 20 s a run, 2 rounds); results belong in docs/benchmarks.md.
	assets="$$(hack/control-plane.sh)"; KUBEBUILDER_ASSETS="$$assets" go run ./hack/bench-token -dpop $(BENCH_DPOP_FLAGS)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (30s by default); not part of make test, which runs their seeds.
	FUZZTIME=$(or $(FUZZTIME),30s) hack/fuzz.sh

.PHONY: failure-test
failure-test: ## Kill a token-server replica and the manager leader, restart the API server, slow and pause etcd, under load, at 1,000 clients (N=...), one package after the other, printing the figures; results belong in docs/reliability.md.
	assets="$$(hack/control-plane.sh)"; KUBEBUILDER_ASSETS="$$assets" M2M_FAILURE_CLIENTS=$(or $(N),1000) go test -p 1 -count=1 -v -timeout 30m ./test/failover/ ./test/outage/

.PHONY: bench-revocation
bench-revocation: ## From disabled: true to the first refusal at a running verifier, 50 tries; results belong in docs/benchmarks.md.
	assets="$$(hack/control-plane.sh)"; KUBEBUILDER_ASSETS="$$assets" go run ./hack/bench-revocation

.PHONY: bench-rotation
bench-rotation: ## Rotate 1,000 clients at once under token load; results belong in docs/benchmarks.md.
	assets="$$(hack/control-plane.sh)"; KUBEBUILDER_ASSETS="$$assets" go run ./hack/bench-rotation

.PHONY: soak
soak: ## Soak: SOAK_DURATION (30m) at 80% of the measured maximum rate across SOAK_CLIENTS (10,000), every client rotated once in the middle; PASS/FAIL on RSS, failures and rotations (docs/reliability.md). Not part of make test.
	assets="$$(hack/control-plane.sh)"; KUBEBUILDER_ASSETS="$$assets" go run ./hack/soak -duration $(or $(SOAK_DURATION),30m) -clients $(or $(SOAK_CLIENTS),10000)

##@ Run

# Built and exec'd rather than `go run`: go run exits 1 after an interrupt whatever its program
# returns (golang/go#40467), so Ctrl-C ended in make's "Error 1". With exec, make's child is the
# program itself, and its exit status is make's.
.PHONY: dev
dev: ## Run the whole system on a local control plane until Ctrl-C (DEFAULT_AUDIENCE=... sets the token server's; TLS=1 serves HTTPS with the manager's CA; PUBLIC=1 adds a public door on https://localhost:9443, as a Gateway, in front of it (docs/saas.md); DEV_FLAGS=... adds hack/dev flags, e.g. -issuer-url, -state-dir, -v).
	assets="$$(hack/control-plane.sh)"; go build -o bin/m2m-dev ./hack/dev; KUBEBUILDER_ASSETS="$$assets" exec bin/m2m-dev -default-audience='$(DEFAULT_AUDIENCE)' $(if $(filter-out 0 false,$(TLS)),-tls) $(if $(filter-out 0 false,$(PUBLIC)),-public) $(DEV_FLAGS)

.PHONY: dev-clean
dev-clean: ## Remove the state of `make dev`.
	rm -rf .dev

.PHONY: help
help:
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
