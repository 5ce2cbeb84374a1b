# Shale's entry points. `make run` and `make test` work on a fresh machine
# with only Go installed (and root, or sudo, for Debian packages).

GO      ?= go
BIN     := bin
# DATA: the data directory of `make run` (when empty, shale dev uses
# SHALE_DATA_DIR, else ./data); RUNFLAGS: more `shale dev` flags;
# BENCHFLAGS: flags of cmd/shale-bench.
DATA     ?=
RUNFLAGS ?=
BENCHFLAGS ?=
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: all build run test test-short bench vet fmt fuzz soak tools kcat minio terraform etcd helm docker prometheus clean

all: build

# VERSION is what `shale version` prints (git describe; empty without git:
# the module's build info, or "devel").
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)

build:
	$(GO) build $(if $(VERSION),-ldflags "-X main.version=$(VERSION)") -o $(BIN)/shale ./cmd/shale

## run: the embedded single-node system (Kafka on 127.0.0.1:9092, HTTP on 127.0.0.1:9644)
run: build
	$(BIN)/shale dev $(if $(DATA),--data-dir $(DATA)) $(RUNFLAGS)

## test: the whole suite (unit, fuzz corpora, end-to-end with franz-go and kcat),
## built with the invariants tag: released tiering chunk buffers are poisoned, so
## a read of one after its release shows as wrong bytes rather than passing by luck
test: tools vet
	$(GO) test -race -tags invariants -timeout 25m ./...

## test-short: the suite without the slow end-to-end tests
test-short: vet
	$(GO) test -short ./...

## bench: throughput and latency against `shale dev`, beside the in-memory kfake ceiling
bench: build
	$(GO) run ./cmd/shale-bench $(BENCHFLAGS)

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

## fuzz: run every fuzz target for FUZZTIME each (the corpora also run in `make test`)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## soak: the fault-injection soaks, SOAK_RUNS runs of each with a new seed, with
## the race detector: a consumer group through broker, machine and etcd faults
## (SOAK_ROUNDS rounds), a tiered three-broker cluster (SOAK_ROUNDS rounds), a
## tiered broker through kills and store outages, unclean elections on a
## three-broker cluster (SOAK_ROUNDS rounds). A failed run keeps its output and
## every broker's whole log at debug level under SOAK_DIR, with its seed to run
## it again (SHALE_GROUP_SOAK_SEED, SHALE_CLUSTER_SOAK_SEED, SHALE_SOAK_SEED,
## SHALE_UNCLEAN_SOAK_SEED)
SOAK_RUNS   ?= 10
SOAK_ROUNDS ?= 8
SOAK_DIR    ?= $(CURDIR)/soak
soak: kcat minio
	@mkdir -p $(SOAK_DIR)
	$(GO) test -race -tags invariants -c -o $(SOAK_DIR)/shale.test ./cmd/shale
	@failed=0; for t in TestGroupSoak TestTieredClusterSoak TestSpreadClusterSoak TestTierSoakKillsAndOutages TestUncleanElectionSoak; do \
	  for i in $$(seq 1 $(SOAK_RUNS)); do \
	    d=$(SOAK_DIR)/$$t-$$i; rm -rf $$d; mkdir -p $$d; \
	    if (cd cmd/shale && SHALE_GROUP_SOAK_ROUNDS=$(SOAK_ROUNDS) SHALE_CLUSTER_SOAK_ROUNDS=$(SOAK_ROUNDS) SHALE_UNCLEAN_SOAK_ROUNDS=$(SOAK_ROUNDS) SHALE_SPREAD_SOAK_ROUNDS=$(SOAK_ROUNDS) \
	        SHALE_TEST_LOG_DIR=$$d/logs SHALE_TEST_LOG_LEVEL=debug \
	        $(SOAK_DIR)/shale.test -test.run "^$$t\$$" -test.v -test.timeout 30m) > $$d/out.txt 2>&1; then \
	      echo "$$t run $$i: ok"; rm -rf $$d; \
	    else \
	      echo "$$t run $$i: FAILED ($$(grep -m1 -o 'seed [0-9]*' $$d/out.txt)), see $$d"; failed=$$((failed+1)); \
	    fi; \
	  done; \
	done; [ $$failed = 0 ]

tools: kcat minio terraform etcd helm docker prometheus

## minio: the S3 server the tests run (built from a pinned pseudo-version
## into .tools/bin, once per version; the project is archived upstream and
## only its binary is used, never linked). Static (CGO_ENABLED=0), so the
## compose test can also put it in a FROM scratch image.
TOOLS         := $(CURDIR)/.tools/bin
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
minio: $(TOOLS)/.minio-$(MINIO_VERSION)-static

$(TOOLS)/.minio-$(MINIO_VERSION)-static:
	@echo "building minio $(MINIO_VERSION) into $(TOOLS) (a few minutes, once)"
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS=-buildvcs=false CGO_ENABLED=0 $(GO) install github.com/minio/minio@$(MINIO_VERSION)
	@touch $@

## terraform: checks terraform/ in the tests (fmt, validate with a stand-in
## AWS provider, the rendered boot scripts); built from source into
## .tools/bin once per version (about 8 minutes of CPU)
TERRAFORM_VERSION := v1.5.7
terraform: $(TOOLS)/.terraform-$(TERRAFORM_VERSION)

$(TOOLS)/.terraform-$(TERRAFORM_VERSION):
	@echo "building terraform $(TERRAFORM_VERSION) into $(TOOLS) (several minutes, once)"
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS=-buildvcs=false $(GO) install github.com/hashicorp/terraform@$(TERRAFORM_VERSION)
	@touch $@

## etcd: a static etcd server and etcdctl of the version go.mod uses, for
## the etcd image of the compose test (deploy/compose_test.go). etcd's own
## go.mod has replace directives, so `go install pkg@version` refuses it:
## build it in a throwaway module instead.
ETCD_VERSION := $(shell awk '$$1 == "go.etcd.io/etcd/server/v3" {print $$2}' go.mod)
etcd: $(TOOLS)/.etcd-$(ETCD_VERSION)

$(TOOLS)/.etcd-$(ETCD_VERSION):
	@echo "building etcd $(ETCD_VERSION) into $(TOOLS) (a minute or two, once)"
	@rm -rf $(TOOLS)/.etcd-build && mkdir -p $(TOOLS)/.etcd-build
	cd $(TOOLS)/.etcd-build && $(GO) mod init etcdbuild >/dev/null 2>&1 && \
	  $(GO) get go.etcd.io/etcd/server/v3@$(ETCD_VERSION) go.etcd.io/etcd/etcdctl/v3@$(ETCD_VERSION) && \
	  CGO_ENABLED=0 GOFLAGS=-buildvcs=false $(GO) build -o $(TOOLS)/etcd go.etcd.io/etcd/server/v3 && \
	  CGO_ENABLED=0 GOFLAGS=-buildvcs=false $(GO) build -o $(TOOLS)/etcdctl go.etcd.io/etcd/etcdctl/v3
	@rm -rf $(TOOLS)/.etcd-build
	@touch $@

## helm: lints and renders deploy/helm/shale in the tests
HELM_VERSION := v3.22.0
helm: $(TOOLS)/.helm-$(HELM_VERSION)

$(TOOLS)/.helm-$(HELM_VERSION):
	@echo "building helm $(HELM_VERSION) into $(TOOLS) (a few minutes, once)"
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS=-buildvcs=false CGO_ENABLED=0 $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@touch $@

## docker: the compose test needs a running Docker daemon: when docker is
## installed but its daemon is down, start it (systemd, the init script,
## else dockerd itself). Docker itself is not installed here.
docker:
	@if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then \
	  echo "starting the docker daemon"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  $$SUDO systemctl start docker >/dev/null 2>&1 || $$SUDO service docker start >/dev/null 2>&1 || \
	    { command -v dockerd >/dev/null 2>&1 && $$SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'; } || true; \
	  for i in $$(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null 2>&1 || echo "warning: the docker daemon is not running (the compose test fails under CI=true)"; \
	fi

## kcat: the second Kafka client the tests use (Debian package)
kcat:
	@command -v kcat >/dev/null 2>&1 || { \
	  echo "installing kcat (Debian package)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get install -y kcat >/dev/null 2>&1 || { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y kcat >/dev/null; }; \
	}
	@command -v kcat >/dev/null 2>&1 || { echo "kcat could not be installed"; exit 1; }

## prometheus: the metrics server (and promtool) the metrics test scrapes
## shale dev with and checks the Grafana dashboard's queries against
## (Debian package)
prometheus:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
	  echo "installing prometheus (Debian package)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get install -y prometheus >/dev/null 2>&1 || { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y prometheus >/dev/null; }; \
	}
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { echo "prometheus could not be installed"; exit 1; }

clean:
	rm -rf $(BIN)
