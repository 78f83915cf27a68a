#!/usr/bin/env bash
# What `make bench` needs beyond `make setup`, as root, idempotent:
#   - gnuplot (the PNG chart), dpdk-test-crypto-perf (package dpdk-dev)
#   - DPDK's ipsec-secgw example, built from Debian's dpdk source package
#     of the installed DPDK version against the installed libdpdk-dev
#     (pkg-config). The source lands in build/dpdk-src (gitignored) and is
#     never committed; the binary is build/ipsec-secgw/ipsec-secgw.
# A failed ipsec-secgw build is reported and does not stop the benchmark:
# its column then says why it is missing.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "bench-deps: run as root (make bench in a root shell)" >&2
	exit 1
fi

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build
srclist=/etc/apt/sources.list.d/swanpath-src.sources

pkgs=(dpdk dpdk-dev libdpdk-dev librte-crypto-ipsec-mb23 pkg-config build-essential dpkg-dev
	libpcap-dev gnuplot-nox iproute2 procps)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "bench-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

secgw() {
	local ver upstream src out stamp
	ver=$(dpkg-query -W -f '${Version}' libdpdk-dev)
	upstream=${ver%%-*}
	out=$build/ipsec-secgw
	stamp=$out/version
	if [ -x "$out/ipsec-secgw" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$ver" ]; then
		echo "bench-deps: ipsec-secgw $ver already built"
		return 0
	fi
	# deb-src entries for apt-get source (same mirror and suites as deb),
	# as charon/Makefile adds them for the strongSwan headers
	if [ ! -f $srclist ] && ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ \
		&& ! grep -qs '^deb-src' /etc/apt/sources.list; then
		sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > $srclist
		apt-get update -qq
	fi
	apt-cache showsrc dpdk >/dev/null 2>&1 || apt-get update -qq
	mkdir -p "$build/dpdk-dl"
	src=$build/dpdk-dl/dpdk-$upstream
	if [ ! -f "$src/examples/ipsec-secgw/Makefile" ]; then
		(cd "$build/dpdk-dl" && apt-get source -qq "dpdk=$ver" >/dev/null) || {
			echo "bench-deps: apt-get source dpdk=$ver failed" >&2
			return 1
		}
	fi
	[ -f "$src/examples/ipsec-secgw/Makefile" ] || {
		echo "bench-deps: no examples/ipsec-secgw in $src" >&2
		return 1
	}
	rm -rf "$build/dpdk-src"
	mkdir -p "$build/dpdk-src"
	cp -r "$src/examples/ipsec-secgw" "$src/examples/common" "$build/dpdk-src/" 2>/dev/null ||
		cp -r "$src/examples/ipsec-secgw" "$build/dpdk-src/"
	# ipsec-secgw 22.11 insists on RX checksum offload (port_conf), which
	# the in-memory ports (net_pcap, net_null) lack: it would exit at
	# port_init. The benchmark's frames carry correct checksums, and the
	# application checks none itself, so the requirement is dropped here,
	# in the build copy only.
	sed -i 's/^\(\t*\)\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,/\1.offloads = 0,/' \
		"$build/dpdk-src/ipsec-secgw/ipsec-secgw.c"
	grep -q '\.offloads = 0,' "$build/dpdk-src/ipsec-secgw/ipsec-secgw.c" || {
		echo "bench-deps: could not drop the RX checksum requirement of ipsec-secgw" >&2
		return 1
	}
	make -s -C "$build/dpdk-src/ipsec-secgw" >"$build/ipsec-secgw-build.log" 2>&1 || {
		tail -n 20 "$build/ipsec-secgw-build.log" >&2
		echo "bench-deps: ipsec-secgw build failed (log: build/ipsec-secgw-build.log)" >&2
		return 1
	}
	mkdir -p "$out"
	cp "$build/dpdk-src/ipsec-secgw/build/ipsec-secgw-shared" "$out/ipsec-secgw"
	echo "$ver" > "$stamp"
	echo "bench-deps: built ipsec-secgw from Debian's dpdk $ver"
}

if ! secgw; then
	rm -f "$build/ipsec-secgw/ipsec-secgw"
	echo "bench-deps: continuing without ipsec-secgw" >&2
fi
