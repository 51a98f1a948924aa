# datadog-csi — every target a user or CI relies on. See README.md.
#
# Generated things live in bin/, .cache/ and dist/ (gitignored). Expensive,
# version-keyed artifacts (Kubernetes binaries, the offline kind node image,
# the dedicated dockerd's data root) live OUTSIDE the checkout, in CACHE_DIR,
# so a fresh clone on a warm machine rebuilds nothing.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
BIN       := $(CURDIR)/bin
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/datadog-csi
export CACHE_DIR
export PATH := $(BIN):$(PATH)
export GOFLAGS ?= -buildvcs=false

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

## ---- the two commands -------------------------------------------------------

.PHONY: test
test: lint unit fuzz-short charts integration e2e demo-check cluster-down-check ## everything: lint, unit, fuzzing, charts, integration, e2e, then cluster-down and a check it left nothing

.PHONY: demo
demo: ## create/reuse the cluster, install everything, replay the baseline scenario
	ci/demo.sh up

.PHONY: demo-down
demo-down: ## remove what make demo installed
	ci/demo.sh down

.PHONY: demo-check
demo-check: ## make demo, then make demo-down: the README's first command works (part of make test)
	ci/demo.sh up
	ci/demo.sh down

## ---- building blocks ----------------------------------------------------------

.PHONY: tools
tools: ## pinned tools into ./bin (kind, helm v3/v4, kubectl, helm-docs, ct, benchstat)
	ci/tools.sh

.PHONY: build
build: ## the product binaries into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -ldflags='-s -w' -o $(BIN)/ ./driver/cmd/... ./webhook/cmd/...

.PHONY: lint
lint: ## gofmt, go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd tests && $(GO) vet ./...

.PHONY: unit
unit: ## unit tests of the product module (real bind mounts: run as root), and every benchmark once
	$(GO) test -count=1 ./...
	@mkdir -p .cache && echo "benchmarks, one iteration each (output in .cache/bench-smoke.txt)" && \
	$(GO) test -count=1 -run '^$$' -bench . -benchtime=1x ./driver/... ./webhook/... >.cache/bench-smoke.txt 2>&1 || \
	{ cat .cache/bench-smoke.txt; exit 1; }

.PHONY: k8s-bins
k8s-bins: ## build Kubernetes, etcd, coredns, crictl from the Go proxy into CACHE_DIR (cached)
	ci/k8s-build.sh

.PHONY: integration
integration: k8s-bins ## tests against a real etcd + kube-apiserver started as processes
	cd tests && K8S_BIN_DIR=$$(../ci/k8s-build.sh --print-bin-dir) $(GO) test -count=1 ./integration/...
	@mkdir -p .cache && echo "webhook process RSS benchmark, 2 s of load (output in .cache/bench-rss-smoke.txt)" && \
	(cd tests && K8S_BIN_DIR=$$(../ci/k8s-build.sh --print-bin-dir) RSS_BENCH_SECONDS=2 $(GO) test -count=1 -run '^$$' -bench BenchmarkServeRSS -benchtime=1x ./integration/) >.cache/bench-rss-smoke.txt 2>&1 || \
	{ cat .cache/bench-rss-smoke.txt; exit 1; }

.PHONY: images
images: ## build the driver, webhook and test images locally (no registry)
	ci/images.sh

.PHONY: cluster
cluster: ## create or reuse the kind cluster datadog-csi (offline unless KIND_NODE_IMAGE is set)
	ci/cluster.sh up

.PHONY: cluster-down
cluster-down: ## delete the cluster and everything make cluster set up on the host
	ci/cluster.sh down

.PHONY: cluster-down-check
cluster-down-check: ## make cluster-down, then fail if it left containers, mounts, rules or routes
	ci/cluster-down-check.sh

.PHONY: e2e
e2e: cluster images ## cluster checks (sealed network, propagation) and end-to-end tests on kind
	eval "$$(ci/cluster.sh env)" && cd tests && $(GO) test -count=1 -v ./cluster/...
	ci/e2e.sh
	E2E_BENCH_PODS=2 ci/e2e.sh -bench  # the benchmark runs too (make bench-e2e: 20 pods per mode)

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 60s; a count like 30000x works too)
	$(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(or $(FUZZTIME),60s) ./driver/internal/volume/
	$(GO) test -run '^$$' -fuzz '^FuzzMutate$$' -fuzztime $(or $(FUZZTIME),60s) ./webhook/pkg/mutate/
	$(GO) test -run '^$$' -fuzz '^FuzzPatchFields$$' -fuzztime $(or $(FUZZTIME),60s) ./webhook/pkg/mutate/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePodFields$$' -fuzztime $(or $(FUZZTIME),60s) ./webhook/pkg/mutate/
	$(GO) test -run '^$$' -fuzz '^FuzzPodReviewDecode$$' -fuzztime $(or $(FUZZTIME),60s) ./webhook/pkg/server/

.PHONY: fuzz-short
# A count, not a duration: go1.26's fuzz coordinator can report "context deadline exceeded" as a
# failure when a duration runs out (go.dev/issue/75804, fixed in go1.27); a count has no deadline.
fuzz-short: ## every fuzz target for 30000 inputs, 1-8 s each (part of make test)
	$(MAKE) fuzz FUZZTIME=30000x

.PHONY: bench
bench: ## Go benchmarks (driver publish/unpublish vs raw syscalls, webhook vs no-op)
	mkdir -p .cache && $(GO) test -run '^$$' -bench . -benchmem -count=6 ./driver/... ./webhook/... | tee .cache/bench.txt

.PHONY: bench-e2e
bench-e2e: cluster images ## pod start overhead on kind: csi vs hostip
	ci/e2e.sh -bench

## ---- charts -----------------------------------------------------------------------

.PHONY: charts
charts: tools docs-check chart-repo k8s-bins ## helm lint (v3+v4), ct lint, render tests, chart repo test, install on a real apiserver
	K8S_BIN_DIR=$$(ci/k8s-build.sh --print-bin-dir) ci/charts.sh

.PHONY: docs
docs: tools ## regenerate chart READMEs with helm-docs
	bin/helm-docs --chart-search-root charts

.PHONY: docs-check
docs-check: docs ## fail if a chart README is stale
	@git diff --exit-code -- 'charts/*/README.md' || { echo "chart READMEs are stale: run 'make docs' and commit"; exit 1; }

.PHONY: chart-repo
chart-repo: tools ## package the charts and write dist/charts/index.yaml
	ci/chart-repo.sh

.PHONY: clean
clean: ## remove generated things in the checkout (not CACHE_DIR)
	rm -rf bin .cache dist
