#!/usr/bin/env bash
# Installs what swanpath needs to build and test on Debian 12, as root:
# Debian packages (DPDK 22.11 with the ipsec-mb and openssl crypto PMDs,
# strongSwan 5.9.8 with swanctl and kernel-libipsec, test tools), the
# strongSwan source for the plugin headers (via charon/Makefile), and
# hugepages. Safe to run again; it skips what is already there.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "setup: run as root (sudo make setup)" >&2
	exit 1
fi

PKGS=(
	# DPDK 22.11 and its crypto PMDs
	dpdk dpdk-dev libdpdk-dev librte-crypto-ipsec-mb23 librte-crypto-openssl23 pkg-config
	# strongSwan: charon, swanctl, kernel-libipsec (interop peer)
	strongswan-charon strongswan-swanctl charon-systemd libcharon-extra-plugins
	# openssl (curve25519, chacha20poly1305) and gcm, which charon loads
	libstrongswan-standard-plugins
	# building the charon plugin (configure needs gmp/openssl headers)
	build-essential dpkg-dev libgmp-dev libssl-dev libsystemd-dev libpcap-dev
	# lab and tests
	iproute2 iputils-ping iperf3 tcpdump nftables ethtool procps util-linux
	# kernel hosts (lab.UML): Linux 6.1 as a program with ESP modules, and
	# modprobe for them; the lab builds its agent and ptrace shim with go and cc
	user-mode-linux kmod
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's strongswan-starter (pulled in on some installs) would start a
# system charon; the lab runs its own charons and needs none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q strongswan-starter 2>/dev/null; then
	systemctl stop strongswan-starter || true
fi

# Go: the machine's toolchain (/usr/local/go) or Debian's.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "setup: no Go toolchain found; install Go >= 1.22 (golang-go from bookworm-backports)" >&2
	exit 1
fi

# Hugepages for DPDK: 1024 x 2 MiB unless more are reserved already.
"$(dirname "$0")/hugepages.sh"

echo "setup: done"
