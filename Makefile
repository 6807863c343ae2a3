# banger: build, test, runtime bundle.
#   make deps      install the Debian/Ubuntu packages banger needs (root)
#   make build     bin/banger, bin/bangerd and bin/banger-tui (static, CGO_ENABLED=0)
#   make runtime   guest kernel, initramfs, modules and agent under ./runtime, locked in runtime/bundle.lock.toml
#   make package-runtime   bin/banger-runtime-VERSION.tar.gz (+ .sha256) from ./runtime
#   make install PREFIX=/usr/local   binaries, runtime bundle, completions, systemd user unit
#   make uninstall PREFIX=/usr/local
#   make test      unit tests, then the end-to-end tests (root, QEMU)
#   make bench     benchmarks in bench/ (need root and a default image)

GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/bangerhq/banger/internal/version.Version=$(VERSION)
RUNTIME  ?= runtime
PREFIX   ?= /usr/local
DESTDIR  ?=
BUNDLE_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' runtime-bundle.toml | head -n1)
RUNTIME_TARBALL := bin/banger-runtime-$(BUNDLE_VERSION).tar.gz
export CGO_ENABLED = 0
# internal/subid: RootRangeStart, SandboxSize + VMMSlots ids.
ROOT_SUBIDS := 2147483648-2147614719

# What banger runs, nothing recommended beside it: qemu-system-x86 brings
# qemu-system-common (virtiofsd, /usr/lib/qemu/virtiofsd) and the microvm
# firmware; banger uses no qemu-img (qemu-utils). On a fresh Debian 12 this
# is 93 packages (51 MiB) instead of 380 (273 MiB) with recommends.
# libcap2-bin (setcap) is for the file capabilities a non-root bangerd uses.
APT_PACKAGES := qemu-system-x86 mmdebstrap uidmap fakeroot e2fsprogs \
	busybox-static cpio lz4 openssh-client iproute2 nftables ca-certificates git make tmux kmod \
	xz-utils shellcheck libcap2-bin

.PHONY: all build agent deps runtime test unit-test e2e-test test-firecracker bench clean vet package-runtime install uninstall

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger ./cmd/banger
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/bangerd ./cmd/bangerd
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/banger-tui ./cmd/banger-tui

deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	@# A root bangerd maps build sandboxes and runs VMMs as subordinate ids
	@# of root (internal/subid): give root its range once.
	grep -q '^root:' /etc/subuid 2>/dev/null || usermod --add-subuids $(ROOT_SUBIDS) root
	grep -q '^root:' /etc/subgid 2>/dev/null || usermod --add-subgids $(ROOT_SUBIDS) root

runtime: $(RUNTIME)/kernel/vmlinux agent
	$(GO) run ./internal/bundle/lockgen -dir $(RUNTIME) -manifest runtime-bundle.toml

# The guest agent, static, into the runtime bundle (images install it).
agent:
	mkdir -p $(RUNTIME)/agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RUNTIME)/agent/banger-vsock-pingd ./cmd/banger-vsock-pingd
	@# The agent changed: re-record its hashes (the kernel's stay as locked).
	@if [ -f $(RUNTIME)/bundle.lock.toml ]; then $(GO) run ./internal/bundle/lockgen -dir $(RUNTIME) -manifest runtime-bundle.toml agent; fi

$(RUNTIME)/kernel/vmlinux: scripts/make-runtime.sh
	scripts/make-runtime.sh $(RUNTIME)

vet:
	$(GO) vet ./...

# Unit tests use the real kernel where they can (QEMU driver, TUI), so the
# runtime bundle comes first.
unit-test: runtime
	$(GO) test -count=1 $$(go list ./... | grep -v /e2e)

e2e-test: build runtime
	$(GO) test -count=1 -v -timeout 60m ./e2e/

test: vet unit-test e2e-test

# The real-Firecracker tests, for a KVM host: fetch the Firecracker release
# the bundle pins into ./runtime (verified against its published checksum),
# then run the tests that need it, which fail here instead of skipping when
# Firecracker or a KVM that runs guests is missing.
test-firecracker: build runtime
	bin/banger runtime fetch firecracker --dir $(RUNTIME)
	BANGER_REQUIRE_FIRECRACKER=1 $(GO) test -count=1 -v -run 'TestRealFirecracker' ./internal/vmm/firecracker/

bench: build runtime
	bench/run.sh

# A bundle tarball and its .sha256 from the verified ./runtime.
package-runtime: build runtime
	bin/banger runtime package --dir $(RUNTIME) -o $(RUNTIME_TARBALL)

# Binaries to PREFIX/bin; the bundle to PREFIX/lib/banger through the same
# verify-then-swap path `banger runtime install` uses; completions; a
# systemd user unit (KillMode=process: VMs outlive a restart of bangerd,
# which re-adopts them).
install: package-runtime
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/user \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 0755 bin/banger bin/bangerd bin/banger-tui $(DESTDIR)$(PREFIX)/bin/
	bin/banger runtime install --dir $(DESTDIR)$(PREFIX)/lib/banger $(RUNTIME_TARBALL)
	bin/banger completion bash >$(DESTDIR)$(PREFIX)/share/bash-completion/completions/banger
	bin/banger completion zsh >$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_banger
	bin/banger completion fish >$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/banger.fish
	printf '%s\n' '[Unit]' 'Description=banger daemon (disposable Linux microVMs)' \
		'Documentation=https://github.com/bangerhq/banger' '' '[Service]' \
		'ExecStart=$(PREFIX)/bin/bangerd' 'Restart=on-failure' \
		'# Stop only bangerd: the VMM processes keep running and are re-adopted.' \
		'KillMode=process' '' '[Install]' 'WantedBy=default.target' \
		>$(DESTDIR)$(PREFIX)/lib/systemd/user/bangerd.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/user/bangerd.service

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/banger $(DESTDIR)$(PREFIX)/bin/bangerd $(DESTDIR)$(PREFIX)/bin/banger-tui \
		$(DESTDIR)$(PREFIX)/lib/systemd/user/bangerd.service \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/banger \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_banger \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/banger.fish
	rm -rf $(DESTDIR)$(PREFIX)/lib/banger

clean:
	rm -rf bin
