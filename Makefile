# make test: what CI runs (.ci/run). It fails on vet findings, an untidy
# go.mod, a race, a leaked goroutine or a failing test, in every module of
# MODULES, with the PostgreSQL tests run against a throwaway PostgreSQL and a
# PgBouncer in front of it (scripts/with-postgres.sh), or $DATABASE_URL when
# set.
# make demo: the example app on a throwaway PostgreSQL with seeded data.
# make bench: the benchmarks against the peers, into BENCHMARKS.md.
GO ?= go
# Every Go module in the repository. A listed folder without go.mod is an
# error, not a module skipped.
MODULES := . reqpgx reqprom reqotel compat examples/dashboard benchmarks
DEMO_ADDR ?= 127.0.0.1:8080
# More flags for the demo app, e.g. make demo DEMO_ARGS=-trace
DEMO_ARGS ?=
# The demo's binary, which .gitignore ignores.
DEMO_BIN := examples/dashboard/dashboard

# About how long `go test -race ./...` takes in each module on this project's
# 2-core machine, for the progress lines; update them when a module's tests
# grow or shrink (each module's line ends with the time it took).
RACE_SECS_. := 40
RACE_SECS_reqpgx := 15
RACE_SECS_reqprom := 5
RACE_SECS_reqotel := 5
RACE_SECS_compat := 5
RACE_SECS_examples/dashboard := 45
RACE_SECS_benchmarks := 50

.PHONY: test test-intro packages-tests modules vet tidy race demo fuzz bench

test: test-intro packages-tests vet tidy race

test-intro:
	@echo "make test: go vet, go mod tidy -diff and go test -race in $(MODULES): about 3 minutes (about 8 minutes on a machine's first run, which installs Debian's packages, downloads and compiles everything)"

# What the tests need beyond Go: a C compiler for -race, PostgreSQL,
# PgBouncer and Chromium, installed as root in one apt-get run
# (scripts/ensure-packages.sh).
packages-tests:
	@scripts/ensure-packages.sh tests

modules:
	@for m in $(MODULES); do \
		[ -f $$m/go.mod ] || { echo "make: $$m/go.mod not found, but MODULES in the Makefile lists $$m" >&2; exit 1; }; \
	done

vet: modules
	@first=1; for m in $(MODULES); do \
		if [ $$first = 1 ]; then \
			echo "go vet ./... in $$m (on a machine's first run it downloads and compiles the dependencies: about 30 s)"; \
		else \
			echo "go vet ./... in $$m"; \
		fi; \
		first=0; \
		(cd $$m && $(GO) vet ./...) || exit 1; \
	done

# go.mod and go.sum must be tidy already; -diff changes nothing and fails if they are not.
tidy: modules
	@for m in $(MODULES); do echo "go mod tidy -diff in $$m"; (cd $$m && $(GO) mod tidy -diff) || exit 1; done

# race_step(module): a progress line, then the module's tests.
# CGO_ENABLED=1: the race detector is cgo, and Go turns cgo off by default
# where it finds no C compiler, with a less helpful error.
race_step = echo "go test -race ./... in $(1) (about $(or $(RACE_SECS_$(1)),30) s$(if $(filter $(1),$(firstword $(MODULES))),; on the first run on a machine each module first compiles for the race detector: up to a minute more))"; t0=$$(date +%s); (cd $(1) && CGO_ENABLED=1 $(GO) test -race -count=1 ./...); echo "  ($(1): $$(($$(date +%s) - t0)) s)";

race: modules
	@scripts/with-postgres.sh --for tests sh -c 'set -e; $(foreach m,$(MODULES),$(call race_step,$(m)))'

# A binary rather than `go run`: after a Ctrl-C, `go run` exits 1 whatever
# the program does. And at a terminal the demo runs as a job of its own
# (bash -m) in the foreground, so that a Ctrl-C reaches the demo alone: GNU
# make, when the signal reaches it too, exits 130 after even a clean stop.
# Without a terminal, scripts/with-postgres.sh runs the app in a process
# group of its own: a SIGINT or SIGTERM to that group stops it gracefully
# and make exits 0; one to make's group reaches the app once, through the
# wrapper, and make then exits 130 (GNU make always does when interrupted).
demo:
	@scripts/ensure-packages.sh demo
	@echo "building $(DEMO_BIN) (about 1 minute the first time on a machine, which downloads the modules)..."
	@cd examples/dashboard && $(GO) build -o dashboard .
	@echo "starting the demo on a throwaway PostgreSQL; it seeds an empty database first (about 8 s)..."
	@run='scripts/with-postgres.sh --for demo $(DEMO_BIN) -addr $(DEMO_ADDR) $(DEMO_ARGS)'; \
	if [ -t 0 ]; then bash -m -c "$$run"; else sh -c "$$run"; fi

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzRequestID -fuzztime 30s .
	$(GO) test -run '^$$' -fuzz FuzzAppendComment -fuzztime 30s .

# The benchmarks against errgroup, a semaphore, pond and ants (benchmarks/,
# a module of its own), PostgreSQL scenario included; writes BENCHMARKS.md.
# About 17 minutes on 2 cores.
bench:
	@scripts/ensure-packages.sh bench
	scripts/with-postgres.sh --for bench sh -c 'cd benchmarks && $(GO) run . -out ../BENCHMARKS.md'
