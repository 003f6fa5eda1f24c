# etcd-gateway: build, test and try it out. Needs Go 1.26 or later (and make, sh).
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: build test unit fuzz e2e soak demo etcd etcd-3.4 lint clean haproxy bench bench-faults bench-idle profile-idle

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

## etcd-3.4: Debian's etcd 3.4 server (package etcd-server) for the version matrix, unpacked into
## e2e/bin/etcd-3.4 without installing the package, whose service would take port 2379
ETCD34 := e2e/bin/etcd-3.4
etcd-3.4: $(ETCD34)
$(ETCD34):
	@mkdir -p e2e/bin
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	{ apt-get download etcd-server >/dev/null 2>&1 || { apt-get update -qq && apt-get download etcd-server; }; } && \
	dpkg-deb -x etcd-server_*.deb root && \
	root/usr/bin/etcd --version | grep -q '^etcd Version: 3\.4\.' && \
	cp root/usr/bin/etcd "$(CURDIR)/$(ETCD34)"
	@$(ETCD34) --version | head -1

## test: every test: format, module and vet checks, unit tests with the race detector (each fuzz
## target runs over its committed corpus there, which is deterministic), end-to-end tests
test: lint unit e2e

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	@for m in . e2e bench e2e/versions/etcd-3.5 e2e/versions/etcd-3.7; do (cd $$m && $(GO) mod tidy -diff >/dev/null) || { echo "go mod tidy would change $$m/go.mod or go.sum; run it there"; exit 1; }; done
	$(GO) vet ./...
	cd e2e && $(GO) vet ./...
	cd bench && $(GO) vet ./...
	cd e2e/versions/etcd-3.5 && $(GO) vet ./...
	cd e2e/versions/etcd-3.7 && $(GO) vet ./...

# The race detector needs cgo.
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./...

## fuzz: explores each fuzz target for FUZZTIME beyond its corpus; not part of `make test`, whose
## answer must not depend on luck or on the machine's fuzz cache. Run it before resolving an issue.
# A count, not a duration: with -fuzztime=10s, Go 1.26's fuzz coordinator can fail a clean run
# with "context deadline exceeded" when a worker is busy at the deadline (go.dev/issue/75804,
# fixed in Go 1.27). 100,000 executions take a few seconds per target here.
FUZZTIME ?= 100000x
# One target per run: the go command fuzzes one at a time (cmd/etcd-gateway's tests build a
# race-enabled gateway, hence cgo). A crash it finds is written to the package's testdata/fuzz
# and fails the run; commit it as a regression case.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseEndpoints$$' -fuzztime $(FUZZTIME) ./resolver
	$(GO) test -run '^$$' -fuzz '^FuzzParseEndpointsFile$$' -fuzztime $(FUZZTIME) ./resolver
	$(GO) test -run '^$$' -fuzz '^FuzzSRVAnswer$$' -fuzztime $(FUZZTIME) ./resolver
	CGO_ENABLED=1 $(GO) test -run '^$$' -fuzz '^FuzzParseCommand$$' -fuzztime $(FUZZTIME) ./cmd/etcd-gateway

e2e: etcd-3.4
	cd e2e && CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m ./...

## soak: 10 minutes of connection churn and member faults; resources must come back (SOAK_DURATION)
SOAK_DURATION ?= 10m
soak: build etcd
	cd e2e && CGO_ENABLED=1 SOAK_DURATION=$(SOAK_DURATION) $(GO) test -race -count=1 -tags soak -run '^TestSoak$$' -timeout 30m -v .

## demo: a local 3-member etcd cluster on loopback and the gateway in the foreground (Ctrl-C stops all)
demo: build etcd
	./scripts/demo.sh

haproxy:
	@command -v haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy; }

## bench: speed and footprint against direct connections, etcd's gateway and HAProxy, in one run;
## BASELINE=path/to/an/earlier/etcd-gateway adds that build to the same run
BASELINE ?=
bench: build etcd haproxy
	cd bench && $(GO) run ./run -suite forward -gateway ../bin/etcd-gateway -baseline "$(BASELINE)" -etcd ../e2e/bin/etcd -haproxy $$(command -v haproxy)

## bench-faults: member faults against etcd-gateway, etcd's gateway and HAProxy, in one run
bench-faults: build etcd haproxy
	cd bench && $(GO) run ./run -suite faults -gateway ../bin/etcd-gateway -etcd ../e2e/bin/etcd -haproxy $$(command -v haproxy)

## bench-idle: what etcd-gateway, etcd's gateway and HAProxy cost the host and the members while
## idle, side by side (about 20 minutes; each phase settles for SETTLE=60s, then is measured for
## PHASE=60s; LONG=10m for the last RSS reading); BASELINE=path/to/an/earlier/etcd-gateway adds
## that build
PHASE ?= 60s
SETTLE ?= 60s
LONG ?= 10m
bench-idle: build etcd haproxy
	cd bench && $(GO) run ./run -suite idle -gateway ../bin/etcd-gateway -baseline "$(BASELINE)" -etcd ../e2e/bin/etcd -haproxy $$(command -v haproxy) -settle $(SETTLE) -phase $(PHASE) -long $(LONG)

## profile-idle: CPU and allocation profiles of an idle etcd-gateway for PHASE, plain and TLS
## members, into profiles/
profile-idle: etcd
	$(GO) build -tags profile -o bin/etcd-gateway-profile ./cmd/etcd-gateway
	cd bench && $(GO) run ./run -suite idle-profile -gateway ../bin/etcd-gateway-profile -etcd ../e2e/bin/etcd -profiles ../profiles -phase $(PHASE)

clean:
	rm -rf bin e2e/bin profiles
