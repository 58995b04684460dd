# The one command that runs every test: make test
GO ?= go

.PHONY: build walfetch-take test bench demo fmt vet

BIN ?= bin

# --version of both programs: the release (git describe) and the commit.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/walhub/walhub/version.Version=$(VERSION) -X github.com/walhub/walhub/version.Commit=$(COMMIT)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...
	# walfetch and walfetch-net without cgo: static binaries that start fast on any standby.
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/walfetch ./cmd/walfetch-net
	$(MAKE) --no-print-directory walfetch-take

# walfetch-take, the restore_command's spool hit beside walfetch, is C (see
# its source for why): static, so that it starts with no dynamic linking;
# linked dynamically where the C library has no static form (glibc-static
# not installed), which costs it a little of its start.
TAKE_CFLAGS := -O2 -Wall -Wextra -Werror
walfetch-take:
	mkdir -p $(BIN)
	$(CC) $(TAKE_CFLAGS) -static -o $(BIN)/walfetch-take cmd/walfetch-take/walfetch-take.c 2>/dev/null || \
		$(CC) $(TAKE_CFLAGS) -o $(BIN)/walfetch-take cmd/walfetch-take/walfetch-take.c

# Builds once (cgo SQLite is the slow part), then runs every package's tests,
# the end-to-end ones against real PostgreSQL 15 clusters included.
test:
	$(GO) build ./...
	$(GO) test -count=1 -timeout 45m ./...

# Go benchmarks: the catalog and status with 1,000,000 segments. The
# comparisons with PostgreSQL's own tools are scripts: bench/receive.sh,
# bench/backup.sh, and the walfetch replay benchmark (see README).
bench:
	$(GO) test -run XXX -bench . -benchtime 2000x ./catalog
	$(GO) test -run XXX -bench . -benchtime 20x ./status

# A throwaway primary, the hub streaming under load, a backup, a standby
# restored from it following through walfetch, and walhub status.
demo:
	./scripts/demo.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')
