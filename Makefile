# banger: build, test, runtime bundle.
#   make deps      install the Debian/Ubuntu packages banger needs (root)
#   make build     bin/banger and bin/bangerd (static, CGO_ENABLED=0)
#   make runtime   guest kernel, initramfs and modules under ./runtime
#   make test      unit tests, then the end-to-end tests (root, QEMU)
#   make bench     benchmarks in bench/ (need root and a default image)

GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/bangerhq/banger/internal/version.Version=$(VERSION)
RUNTIME  ?= runtime
export CGO_ENABLED = 0

APT_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap uidmap fakeroot e2fsprogs \
	busybox-static cpio lz4 openssh-client iproute2 nftables ca-certificates git make

.PHONY: all build agent deps runtime test unit-test e2e-test bench clean vet

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger ./cmd/banger
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/bangerd ./cmd/bangerd

deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES)

runtime: $(RUNTIME)/kernel/vmlinux agent

# The guest agent, static, into the runtime bundle (images install it).
agent:
	mkdir -p $(RUNTIME)/agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RUNTIME)/agent/banger-vsock-pingd ./cmd/banger-vsock-pingd

$(RUNTIME)/kernel/vmlinux: scripts/make-runtime.sh
	scripts/make-runtime.sh $(RUNTIME)

vet:
	$(GO) vet ./...

unit-test:
	$(GO) test -count=1 $$(go list ./... | grep -v /e2e)

e2e-test: build runtime
	$(GO) test -count=1 -v -timeout 60m ./e2e/

test: vet unit-test e2e-test

bench: build runtime
	bench/run.sh

clean:
	rm -rf bin
