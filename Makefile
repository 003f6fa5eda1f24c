# etcd-gateway: build, test and try it out. Needs Go 1.26 or later (and make, sh).
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: build test unit e2e demo etcd lint clean haproxy bench bench-faults

# What `etcd-gateway version` prints: the nearest tag (else the commit), and the commit.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
VERSION_PKG := github.com/etcd-gateway/etcd-gateway/internal/version

## build: the static etcd-gateway binary in bin/ (without the symbol table and DWARF: panics
## still print full stack traces)
build:
	$(GO) build -trimpath -ldflags "-s -w -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT)" \
		-o bin/etcd-gateway ./cmd/etcd-gateway

## etcd: etcd v3.6 and etcdctl, built from the published modules into e2e/bin/
etcd:
	cd e2e && $(GO) build -o bin/etcd ./tools/etcd && $(GO) build -o bin/etcdctl ./tools/etcdctl

## test: every test: format and vet checks, unit tests with the race detector, end-to-end tests
test: lint unit e2e

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd e2e && $(GO) vet ./...
	cd bench && $(GO) vet ./...

# The race detector needs cgo.
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./...

e2e:
	cd e2e && CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

## demo: a local 3-member etcd cluster on loopback and the gateway in the foreground (Ctrl-C stops all)
demo: build etcd
	./scripts/demo.sh

haproxy:
	@command -v haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy; }

## bench: speed and footprint against direct connections, etcd's gateway and HAProxy, in one run
bench: build etcd haproxy
	cd bench && $(GO) run ./run -suite forward -gateway ../bin/etcd-gateway -etcd ../e2e/bin/etcd -haproxy $$(command -v haproxy)

## bench-faults: member faults against etcd-gateway, etcd's gateway and HAProxy, in one run
bench-faults: build etcd haproxy
	cd bench && $(GO) run ./run -suite faults -gateway ../bin/etcd-gateway -etcd ../e2e/bin/etcd -haproxy $$(command -v haproxy)

clean:
	rm -rf bin e2e/bin
