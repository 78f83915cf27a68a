# swanpath — DPDK IPsec fast path for strongSwan gateways.
#
# As root (a root shell; a minimal Debian has no sudo):
#   make demo    set up, build, bring up the lab, pass traffic through
#                the tunnel and print the SA table with counters
#   make test    set up, build, run every test (unit, fuzz seeds, lab,
#                the Debian package in a booted Debian 12 container)
#   make deb     build/swanpath_<version>_amd64.deb (Debian 12)
#   make bench   the fast path beside ipsec-secgw and the crypto ceiling
#                (bench/results; never part of the tests)
#   make insn    instructions per packet of swanpathd under callgrind
#                (a load-independent measure; never part of the tests)
# Any user:
#   make build   build swanpathd, swanpathctl and the charon plugin

export PATH := /usr/local/go/bin:$(PATH)
# go-dpdk is not in the checksum database; go.sum pins it.
export GONOSUMDB := github.com/yerden/go-dpdk
export GOFLAGS ?= -buildvcs=false

BIN      := bin
PLUGIN   := build/libstrongswan-kernel-swanpath.so
GO       ?= go
# one package at a time: the lab tests share two cores with charons and DPDK
GOTEST_FLAGS ?= -count=1 -p 1 -timeout 60m

.PHONY: all setup build go plugin install install-plugin test unit demo bench insn clean fmt vet deb

all: build

setup:
	bash scripts/setup.sh
	$(MAKE) -C charon srcdir

build: go plugin

go:
	$(GO) build -o $(BIN)/swanpathd ./cmd/swanpathd
	$(GO) build -o $(BIN)/swanpathctl ./cmd/swanpathctl

plugin:
	$(MAKE) -C charon all

install-plugin: plugin
	$(MAKE) -C charon install

install: build install-plugin
	install -D -m 0755 $(BIN)/swanpathd /usr/local/sbin/swanpathd
	install -D -m 0755 $(BIN)/swanpathctl /usr/local/bin/swanpathctl

# Everything: unit tests, fuzz seed corpora, and the lab (namespaces, real
# charons, real traffic). Needs root.
test: setup build install-plugin
	$(GO) vet ./...
	$(GO) test $(GOTEST_FLAGS) ./...

# Unit tests only (no root, no lab).
unit:
	$(GO) test -count=1 -short ./...

demo: setup build install-plugin
	$(GO) run ./lab/cmd/swanpath-demo

# BENCH_QUICK=1: a smoke run (few cases, short windows) into build/bench-quick;
# BENCH_FLAGS: more swanpath-bench flags (go run ./bench/cmd/swanpath-bench -h)
bench: setup build install-plugin
	bash scripts/bench-deps.sh
	$(GO) run ./bench/cmd/swanpath-bench $(if $(BENCH_QUICK),-quick) $(BENCH_FLAGS)

# INSN_FLAGS: swanpath-insn flags (go run ./bench/cmd/swanpath-insn -h), e.g.
# -swanpathd <an older build> to compare, -case in-gcm128-imix-1sa, -sim
insn: build
	$(GO) run ./bench/cmd/swanpath-insn $(INSN_FLAGS)

# The Debian package: build/swanpath_<version>_amd64.deb, built by
# dpkg-buildpackage in a copy of the tree (build/deb; the files git tracks
# or would track) with the Go toolchain above and the installed strongSwan's
# headers (reused from build/strongswan-src when there).
DEB_VERSION = $(shell dpkg-parsechangelog -S Version)
deb:
	rm -rf build/deb && mkdir -p build/deb/swanpath-$(DEB_VERSION)/build
	git ls-files -z -c -o --exclude-standard | tar -c --null -T - | tar -x -C build/deb/swanpath-$(DEB_VERSION)
	if [ -f build/strongswan-src/config.h ]; then cp -a build/strongswan-src build/deb/swanpath-$(DEB_VERSION)/build/; fi
	cd build/deb/swanpath-$(DEB_VERSION) && dpkg-buildpackage -us -uc -b
	cp build/deb/swanpath_$(DEB_VERSION)_amd64.deb build/
	@echo "deb: build/swanpath_$(DEB_VERSION)_amd64.deb"

fmt:
	gofmt -l -w .

vet:
	$(GO) vet ./...

clean:
	rm -rf $(BIN) build
