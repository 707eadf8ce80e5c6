# pipelined — build, run and test. `make help` lists the targets.

GO      ?= go
BIN     ?= bin
PLUGINS := archive sql slack http
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The commit's own date, not the clock: two builds of one commit are alike.
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell git log -1 --format=%cI 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

.PHONY: all build run test test-short test-jetstream vet fuzz bench bench-jetstream torture torture-short proto help clean dist test-packages ui-screenshots ui-bench

all: build

help:
	@echo "make build   build bin/pipelined and bin/pipelined-sink-<name> for every plugin"
	@echo "make run     build, then run the daemon on ./pipeline.toml, or CONFIG=FILE (no outside service needed)"
	@echo "make test    go vet, then every test with the race detector, end-to-end and PostgreSQL tests included"
	@echo "make test-jetstream  the NATS JetStream cluster tests (3 servers, 2 daemons, kills): ~2 min"
	@echo "make bench   durable ingest against a bare net/http handler and Benthos, as ratios (not part of test)"
	@echo "make bench-jetstream  pipelined on JetStream R1 and R3 (nats-server built from the module), ingest only and end to end: req/s, p99, CPU per event"
	@echo "make torture the torture suite at full size (kill -9 ×20, 60 s outage, disk full as root...): ~5 min"
	@echo "make fuzz    run every fuzz target for FUZZTIME each (default 100000x executions; CI runs it)"
	@echo "make dist VERSION=x.y.z  release artifacts in dist/: tarball, .deb, .rpm, SBOMs per linux/amd64 and arm64, SHA256SUMS"
	@echo "make test-packages  as root on a throwaway Debian machine: dist twice (reproducible), install the .deb, run it, purge it (packaging/test-deb.sh)"
	@echo "make ui-screenshots  the browser test of the web UI (headless chromium), writing a PNG of each page to docs/ui/"
	@echo "make ui-bench  time every page of the web UI against a Badger log of 1,000,000 events (kept in UI_BENCH_DIR)"
	@echo "make proto   regenerate the protobuf code (needs protoc, protoc-gen-go, protoc-gen-go-grpc, protoc-gen-go-vtproto)"

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pipelined ./cmd/pipelined
	@for p in $(PLUGINS); do echo "$(GO) build -o $(BIN)/pipelined-sink-$$p ./cmd/pipelined-sink-$$p"; \
		$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/pipelined-sink-$$p ./cmd/pipelined-sink-$$p || exit 1; done

# CONFIG= runs another file (a copy you edit); relative paths in it resolve
# against its own directory.
CONFIG ?= pipeline.toml
run: build
	$(BIN)/pipelined serve -c $(CONFIG)

# The modules besides the root's: sdk/ (which the root's go.mod replaces
# with ./sdk), the tutorial's plugin module, and the alert rules' check
# (Prometheus's rule parser, kept out of the daemon's dependencies). ./...
# stops at them: vet and test them from their directories too.
MODULES := sdk examples/customsink examples/prometheus

vet:
	$(GO) vet ./...
	@for m in $(MODULES); do echo "cd $$m && $(GO) vet ./..."; (cd $$m && $(GO) vet ./...) || exit 1; done

# The PostgreSQL tests of the sql sink run against a throwaway server on
# 127.0.0.1:55432 that pg-start.sh installs (Debian, as root) and starts;
# without one they are skipped with a message.
test: vet
	PIPELINED_TEST_PG_DSN="$$(plugins/sql/testdata/pg-start.sh || true)" \
	PIPELINED_TEST_PG_RESTART="testdata/pg-start.sh restart" \
	$(GO) test -race -count=1 -timeout 15m ./...
	@for m in $(MODULES); do echo "cd $$m && $(GO) test -race -count=1 -timeout 5m ./..."; \
		(cd $$m && $(GO) test -race -count=1 -timeout 5m ./...) || exit 1; done

# Load runs against baselines, one after another (see bench/bench.sh), and
# the go test benchmarks of the hot paths.
bench:
	bench/bench.sh $(BENCHTIME)
	$(GO) test -run='^$$' -bench=. -benchtime=2000x ./pipeline/ingest ./pipeline/rules
	$(GO) test -run='^$$' -bench=. -benchtime=200x ./pipeline/eventlog/badgerlog ./pipeline/dispatch

# The same on the JetStream backend (bench/jetstream.sh): R1 (one
# nats-server) and R3 (a cluster of three), ingest only and end to end, at
# 64 and 8 connections; BASELINE_BIN= another build, measured right after.
bench-jetstream:
	bench/jetstream.sh $(BENCHTIME)

# The torture suite (tests/torture): daemon and plugin kill -9, sink outage,
# disk full (as root: mounts a tmpfs), power loss, hostile clients, poison.
# `make test` runs its short version; this one runs the full counts and
# writes the table to docs/reliability.md.
torture:
	$(GO) test -count=1 -timeout 30m -v ./tests/torture -args -torture.full -torture.report=$(CURDIR)/docs/reliability.md
torture-short:
	$(GO) test -count=1 -timeout 8m -v ./tests/torture

# Every fuzz target, each for FUZZTIME. Inputs that fail are written to the
# package's testdata/fuzz/ and then run by every `go test`: commit them.
# Targets under ./sdk/ are run in the sdk module (its own go.mod).
FUZZTIME ?= 100000x
FUZZ_TARGETS := \
	./pipeline/ingest:FuzzHandler ./pipeline/ingest:FuzzSignedSource ./pipeline/ingest:FuzzURLTokenSource \
	./pipeline/ingest:FuzzDepth ./pipeline/ingest:FuzzDepthSame ./pipeline/ingest:FuzzRequestPath ./pipeline/ingest:FuzzDecode ./pipeline/ingest:FuzzDedupKeyOfHeaders \
	./pipeline/auth:FuzzStandardWebhooks ./pipeline/auth:FuzzSvixSpelling ./pipeline/auth:FuzzHMAC ./pipeline/auth:FuzzStripe ./pipeline/auth:FuzzBasic ./pipeline/auth:FuzzURLToken \
	./pipeline/config:FuzzParse ./pipeline/rules:FuzzCompile ./pipeline/rules:FuzzFetchPatch ./pipeline/rules:FuzzRedact ./pipeline/rules:FuzzSchemaFastPath ./pipeline/rules:FuzzSchemaFastPathSchemas ./pipeline/rules:FuzzSchemaCheck ./pipeline/eventlog/badgerlog/internal/wal:FuzzReplay ./pipeline/eventlog/badgerlog:FuzzEncode \
	./pipeline/admin:FuzzGuard ./plugins/sql:FuzzValueAt ./plugins/sql:FuzzExtractor ./plugins/internal/jsoncompact:FuzzAppend ./plugins/archive:FuzzAppendRecord \
	./plugins/internal/retryafter:FuzzParse \
	./sdk/internal/wire:FuzzCodec
# FUZZTIME is an execution count by default: Go 1.26's fuzz coordinator can
# end a time-bounded run with a bare "context deadline exceeded" and no
# failing input (golang/go#75804, fixed in Go 1.27); a count has no deadline.
# Given a duration anyway, such a run is repeated once. A real failure writes
# its input under testdata/fuzz and fails the target.
fuzz:
	@out=$$(mktemp); for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; dir=.; \
		case $$pkg in ./sdk/*) dir=sdk; pkg=./$${pkg#./sdk/};; esac; \
		for try in 1 2; do \
			echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
			if $(GO) test -C $$dir -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s $$pkg >$$out 2>&1; then \
				tail -n 2 $$out; break; fi; \
			cat $$out; \
			if [ $$try = 1 ] && grep -q "context deadline exceeded" $$out && ! grep -q "Failing input" $$out; then \
				echo "fuzz $$fn: the go command's deadline flake; running it again"; continue; fi; \
			rm -f $$out; exit 1; \
		done; done; rm -f $$out

# The JetStream cluster tests: three nats-server processes built from the Go
# module, two pipelined daemons in front; kill -9 of a daemon and of the
# stream leader under load (~2 min). CI runs them after `make test`.
test-jetstream:
	PIPELINED_TEST_JETSTREAM_CLUSTER=1 $(GO) test -count=1 -timeout 10m -run 'JetStreamCluster' ./tests/e2e

# The web UI's browser test (tests/browser, headless chromium; `make test`
# runs it too) with a screenshot of each page, 1280 px and phone width,
# light and dark, written to docs/ui/.
ui-screenshots:
	$(GO) test -count=1 -timeout 5m -run TestInspectorInABrowser ./tests/browser -args -ui.screenshots=$(CURDIR)/docs/ui

# Every page of the web UI against a real Badger log of 1,000,000 events.
# The first run fills the log (a few minutes) in UI_BENCH_DIR; later runs
# reuse it. ns/op and worst-ms are per page.
UI_BENCH_DIR ?= /tmp/pipelined-ui-bench
ui-bench:
	mkdir -p $(UI_BENCH_DIR)
	$(GO) test -run='^$$' -bench=BenchmarkPages -benchtime=20x -timeout 60m ./pipeline/inspector \
		-args -inspector.events=1000000 -inspector.dir=$(UI_BENCH_DIR)

test-short:
	$(GO) test -short -count=1 ./...
	@for m in $(MODULES); do (cd $$m && $(GO) test -short -count=1 ./...) || exit 1; done

# The generated code is checked in, so building needs no protoc.
# Debian: apt-get install protobuf-compiler; then
# go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
# go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
# go install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.1-0.20240319094008-0393e58bdf10 (the version grpc requires)
# vtprotobuf adds encoding and decoding methods without reflection (the
# same bytes): the event log's records and the sink protocol's messages use
# them (sdk/internal/wire's codec); see docs/performance.md.
VTPROTO = --go-vtproto_out=. --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size
proto:
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative $(VTPROTO) sdk/proto/sink.proto
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc --go_out=. --go_opt=paths=source_relative \
		$(VTPROTO) pipeline/eventlog/badgerlog/internal/logpb/record.proto

# Release artifacts (packaging/dist.sh): reproducible, from the commit.
# nFPM and cyclonedx-gomod are pinned in tools/go.mod, a module of their own.
dist:
	@case "$(VERSION)" in [0-9]*.*.*|v[0-9]*.*.*) ;; *) echo "make dist VERSION=x.y.z (got $(VERSION))" >&2; exit 2;; esac
	GO=$(GO) packaging/dist.sh $(VERSION) dist

# The packages on this machine (Debian, as root; installs lintian and rpm):
# see packaging/README.md.
test-packages:
	packaging/test-deb.sh

clean:
	rm -rf $(BIN) dist
