# make test: what CI runs (.ci/run). It fails on vet findings, an untidy
# go.mod, a race, a leaked goroutine or a failing test.
GO ?= go

.PHONY: test vet tidy race fuzz bench

test: vet tidy race

vet:
	$(GO) vet ./...

# go.mod and go.sum must be tidy already; -diff changes nothing and fails if they are not.
tidy:
	$(GO) mod tidy -diff

race:
	scripts/with-postgres.sh $(GO) test -race -count=1 ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzRequestID -fuzztime 30s .

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 .
