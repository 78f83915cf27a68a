package main

import "fmt"

// notes says how the numbers were made, next to the table.
func (b *bench) notes() []string {
	o := b.opt
	secgwType := "cpu-crypto"
	if o.mode != "cpu" {
		secgwType = "no-offload (lookaside cryptodev)"
	}
	confinement := "The worker's CPU is kept for it, as on a gateway whose worker cores are isolated: for the " +
		"throughput cases and the install experiment the benchmark confines itself, and so every process it " +
		"starts, to the other CPUs (the DPDK processes then pin their lcores themselves; swanpathd also keeps " +
		"its own control threads off its workers' CPUs). With 2 cores, everything else shares core 0, the " +
		"plugin-socket client of the install experiment included. The lab experiment runs without that confinement."
	if !b.confined {
		confinement = "The benchmark could not keep itself off the worker's CPU (see its log): other processes " +
			"may have run there (swanpathd still keeps its own control threads off its workers' CPUs)."
	}
	return []string{
		"The machine is a virtual machine whose host is shared: the same case measured minutes apart moved by " +
			"up to 10-15% in this project's runs. swanpathd and ipsec-secgw therefore take turns on each case and " +
			"each rate is the median of all its windows; the load average above shows how busy the guest itself " +
			"was. Compare columns of one row (measured back to back) rather than rows far apart.",
		fmt.Sprintf("Every DPDK process runs with EAL lcores %q: lcore 0 is the main (control) lcore, lcore 1 the "+
			"one worker that does all packet work. %s", o.lcores, confinement),
		"swanpathd is the production binary (bin/swanpathd) with its production code path, in a network namespace " +
			"of the benchmark's own: port lan and wan are net_pcap (rx_pcap=<generated pcap>, infinite_rx=1) on " +
			"the input side and net_null (no-rx=1) on the output side, each with its TAP; routes and permanent " +
			"neighbours on the TAPs are mirrored from the namespace's kernel. SAs and policies are installed " +
			"through the plugin socket (bridge/pluginsock Client), as charon's kernel-swanpath plugin does. " +
			"Counted: the output port's tx counter (`swanpathctl stats`).",
		fmt.Sprintf("swanpathd config: crypto.pmd = %s, crypto.mode = %s, idle_sleep_us = 0; every SA's crypto "+
			"device is read back from `swanpathctl sa` (column crypto PMD) and the same PMD is given to "+
			"ipsec-secgw and dpdk-test-crypto-perf.", o.pmd, o.mode),
		"ipsec-secgw: DPDK 22.11's example built from Debian's dpdk source package against the installed " +
			"libdpdk-dev (scripts/bench-deps.sh), librte_ipsec path (-l), SA type " + secgwType + ", replay window " +
			"0 (-w 0), promiscuous, the same pcap, ports, lcores, PMD and SAs (sa/sp/rt/neigh rules generated " +
			"from the same SA list and keys). Counted: the output port's ethdev opackets via DPDK telemetry. " +
			"Its build drops one line of port_conf (RX checksum offload, which net_pcap/net_null lack and which " +
			"22.11 would otherwise demand at start).",
		"Crypto ceiling: dpdk-test-crypto-perf --ptest throughput on the same PMD and one worker lcore, burst " +
			"32, buffers of exactly the bytes ESP encrypts per frame (inner packet + padding + trailer: 48, " +
			"556/560, 1404/1408 B for 64, 570, 1420 B frames); AES-GCM with ESP's 8-byte AAD. For IMIX the " +
			"per-size rates combine harmonically (time per packet averaged over the mix). Measured in every round " +
			"of a case, right after swanpathd and ipsec-secgw; sp/ceiling is the median of the per-round ratios. " +
			"Inbound AES-CBC + HMAC-SHA-256 is the sum of two runs' times per operation, decryption alone and " +
			"HMAC alone over the same buffers: crypto-perf's chained decrypt + verify needs a test-vector file " +
			"(digests that match) and it refuses decrypt + generate.",
		"Ports alone: dpdk-testpmd --forward-mode=io, burst 32, from the same net_pcap (the same pcap, " +
			"infinite_rx=1) into the same net_null (no-rx=1) on the same worker lcore, once per case after the " +
			"first round. net_pcap copies every frame into a fresh mbuf and net_null frees it; both systems pay " +
			"that too, and it does not shrink with a faster fast path.",
		"Replay windows are 0 on both systems (infinite_rx replays the same packets). Inbound frames are real " +
			"ESP made with Go's crypto/cipher (AES-GCM) and crypto/aes + crypto/hmac (AES-CBC + HMAC-SHA-256-128) " +
			"from the installed keys; a decryption failure would show as drop_auth and void the number.",
		fmt.Sprintf("Many-SA cases: %d SA + policy pairs, frames spread round robin over all of them (every SA "+
			"must count packets in `swanpathctl sa`, else the row says so).", o.manySAs),
		"IMIX: 7:4:1 interleaved. The usual large frame, 1518 B (a 1500 B IP packet), does not fit a 1500 B " +
			"tunnel MTU once encrypted, and swanpathd cannot run a larger MTU: its port mtu applies to the TAP " +
			"too, and the TAP PMD refuses frames above 1522 B (\"Frame size (1618) > device max frame size " +
			"(1522)\"); it does not fragment outer packets either, so it would drop those frames (drop_mtu). " +
			"The large IMIX frame is therefore 1420 B here for all three columns (`-imix 64,570,1518` restores " +
			"the usual one).",
		"Latency: the fast path stamps each frame with the time of the receive burst it came in with and, " +
			"when it hands the frame to a wire port's transmit queue, counts the difference in a histogram " +
			"(`swanpathctl stats`; crypto, SPD, routing and the rest of that loop iteration included; the " +
			"port's own transmit and the wire are not). The lab section reads it before and after the pings " +
			"(a moderate rate: the in-memory cases run flat out, where a frame's latency is a whole burst's " +
			"work). Ping's round trip adds both hosts, the kernel-libipsec peer and the veths.",
	}
}
