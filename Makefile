# make test: what CI runs (.ci/run). It fails on vet findings, an untidy
# go.mod, a race, a leaked goroutine or a failing test, in the library and
# in the example app, with the PostgreSQL tests run against a throwaway
# server (or $DATABASE_URL when set).
# make demo: the example app on a throwaway PostgreSQL with seeded data.
# make bench: the benchmarks against the peers, into BENCHMARKS.md.
GO ?= go
MODULES := . examples/dashboard benchmarks
DEMO_ADDR ?= 127.0.0.1:8080

.PHONY: test vet tidy race demo fuzz bench

test: vet tidy race

vet:
	@for m in $(MODULES); do echo "go vet ($$m)"; (cd $$m && $(GO) vet ./...) || exit 1; done

# go.mod and go.sum must be tidy already; -diff changes nothing and fails if they are not.
tidy:
	@for m in $(MODULES); do echo "go mod tidy -diff ($$m)"; (cd $$m && $(GO) mod tidy -diff) || exit 1; done

race:
	scripts/with-postgres.sh sh -c 'set -e; for m in $(MODULES); do (cd $$m && $(GO) test -race -count=1 ./...); done'

demo:
	scripts/with-postgres.sh sh -c 'cd examples/dashboard && exec $(GO) run . -addr $(DEMO_ADDR)'

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzRequestID -fuzztime 30s .
	$(GO) test -run '^$$' -fuzz FuzzAppendComment -fuzztime 30s .

# The benchmarks against errgroup, a semaphore, pond and ants (benchmarks/,
# a module of its own), PostgreSQL scenario included; writes BENCHMARKS.md.
# About 11 minutes on 2 cores.
bench:
	scripts/with-postgres.sh sh -c 'cd benchmarks && $(GO) run . -out ../BENCHMARKS.md'
