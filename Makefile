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

.PHONY: all build run test test-short bench vet fmt fuzz tools kcat minio terraform clean

all: build

build:
	$(GO) build -o $(BIN)/shale ./cmd/shale

## run: the embedded single-node system (Kafka on 127.0.0.1:9092, HTTP on 127.0.0.1:9644)
run: build
	$(BIN)/shale dev $(if $(DATA),--data-dir $(DATA)) $(RUNFLAGS)

## test: the whole suite (unit, fuzz corpora, end-to-end with franz-go and kcat)
test: tools vet
	$(GO) test -race -timeout 25m ./...

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

tools: kcat minio terraform

## minio: the S3 server the tests run (built from a pinned pseudo-version
## into .tools/bin, once per version; the project is archived upstream and
## only its binary is used, never linked)
TOOLS         := $(CURDIR)/.tools/bin
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
minio: $(TOOLS)/.minio-$(MINIO_VERSION)

$(TOOLS)/.minio-$(MINIO_VERSION):
	@echo "building minio $(MINIO_VERSION) into $(TOOLS) (a few minutes, once)"
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS=-buildvcs=false $(GO) install github.com/minio/minio@$(MINIO_VERSION)
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

## kcat: the second Kafka client the tests use (Debian package)
kcat:
	@command -v kcat >/dev/null 2>&1 || { \
	  echo "installing kcat (Debian package)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get install -y kcat >/dev/null 2>&1 || { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y kcat >/dev/null; }; \
	}
	@command -v kcat >/dev/null 2>&1 || { echo "kcat could not be installed"; exit 1; }

clean:
	rm -rf $(BIN)
