package report

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/swanpath/swanpath/bench/sut"
)

func mpps(m Measure) string {
	if !m.OK() {
		return "—"
	}
	return fmt.Sprintf("%.2f", m.PPS/1e6)
}

func gbps(m Measure) string {
	if !m.OK() {
		return "—"
	}
	return fmt.Sprintf("%.2f", m.Gbps)
}

func cycles(m Measure) string {
	if !m.OK() || m.CyclesPerPkt == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", m.CyclesPerPkt)
}

func ratio(v float64) string {
	if v == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", v)
}

// ratioRounds is ratio(v) with, for two rounds or more, the lowest and
// highest of the per-round ratios.
func ratioRounds(v float64, rounds []float64) string {
	if v == 0 || len(rounds) < 2 {
		return ratio(v)
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", v, slices.Min(rounds), slices.Max(rounds))
}

// secgwSummary says, over the rows with both numbers, how swanpath's rate
// compares with ipsec-secgw's: the median ratio, how many rows are at or
// above 1, the extremes, and the median spread of the per-round ratios.
func secgwSummary(rows []Row) string {
	var rs, spreads []float64
	var lo, hi Row
	for _, row := range rows {
		if row.VsSecgw == 0 {
			continue
		}
		if len(rs) == 0 || row.VsSecgw < lo.VsSecgw {
			lo = row
		}
		if len(rs) == 0 || row.VsSecgw > hi.VsSecgw {
			hi = row
		}
		rs = append(rs, row.VsSecgw)
		if len(row.VsSecgwRounds) >= 2 {
			spreads = append(spreads, slices.Max(row.VsSecgwRounds)-slices.Min(row.VsSecgwRounds))
		}
	}
	if len(rs) == 0 {
		return ""
	}
	atLeast := 0
	for _, v := range rs {
		// as printed: a 0.996 the table shows as 1.00 counts
		if math.Round(v*100) >= 100 {
			atLeast++
		}
	}
	s := fmt.Sprintf("swanpath / ipsec-secgw over the %d cases with both numbers: median %.2f; %d of %d at or above 1.00; lowest %.2f (`%s`), highest %.2f (`%s`).",
		len(rs), sut.Median(rs), atLeast, len(rs), lo.VsSecgw, lo.Case, hi.VsSecgw, hi.Case)
	if len(spreads) > 0 {
		s += fmt.Sprintf(" The per-round ratios of one case lie %.2f apart (median over the cases; highest minus lowest): the noise of this machine between rounds of the same case.",
			sut.Median(spreads))
	}
	return s
}

// footnotes numbers the distinct reasons for missing numbers.
type footnotes struct {
	list []string
	idx  map[string]int
}

func (f *footnotes) mark(m Measure) string {
	if m.Error == "" {
		return ""
	}
	if f.idx == nil {
		f.idx = map[string]int{}
	}
	i, ok := f.idx[m.Error]
	if !ok {
		f.list = append(f.list, m.Error)
		i = len(f.list)
		f.idx[m.Error] = i
	}
	return fmt.Sprintf(" [%d]", i)
}

// SuiteTitles and MixTitles name suites and mixes for people.
var (
	SuiteTitles = map[string]string{}
	MixTitles   = map[string]string{}
)

func title(m map[string]string, k string) string {
	if t, ok := m[k]; ok {
		return t
	}
	return k
}

// Markdown renders the results for people.
func (r *Results) Markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	m := r.Machine
	w("# swanpath fast path benchmark\n\n")
	w("Measured %s – %s (UTC) by `make bench`", r.Started.UTC().Format("2006-01-02 15:04"), r.Finished.UTC().Format("15:04"))
	if r.Settings.Quick {
		w(" in quick mode (`BENCH_QUICK=1`: fewer cases, short windows — a smoke test, not a measurement)")
	}
	w(".\nRaw data: `results.json`; chart: `throughput.png`.\n\n")

	w("## Machine\n\n")
	w("| | |\n|---|---|\n")
	w("| CPU | %s (%d cores%s) |\n", m.CPU, m.Cores, map[bool]string{true: ", " + m.Virt + " guest", false: ""}[m.Virt != ""])
	w("| CPU features | %s |\n", m.CPUFlags)
	w("| TSC | %.1f MHz |\n", m.TSCHz/1e6)
	w("| Kernel | %s (%s) |\n", m.Kernel, m.OS)
	w("| Memory | %s, hugepages %s |\n", m.MemoryKB, m.Hugepages)
	w("| DPDK | %s, intel-ipsec-mb %s |\n", m.DPDK, m.IPsecMB)
	w("| swanpath | %s, %s |\n", m.Swanpath, m.Go)
	w("| Load average | %s before, %s after |\n\n", m.LoadBefore, m.LoadAfter)

	w("## Throughput on one worker core\n\n")
	w("Mpps and Gbps of plaintext frames (size counted with FCS, as RFC 2544; inbound:\n")
	rounds := r.Settings.Rounds
	if rounds < 1 {
		rounds = 1
	}
	w("the frames after decryption). swanpathd and ipsec-secgw take turns on each case, %d round(s) of %d windows of %s\n", rounds, r.Settings.Windows, r.Settings.Window)
	w("each (after %s of warm-up per start); a system's rate is the median of all its windows.\n", r.Settings.Warmup)
	w("Cycles per packet = TSC Hz / packets per second of the one busy worker core.\n")
	w("The crypto ceiling is measured in each round too, right after the two systems (%d dpdk-test-crypto-perf run(s)).\n", max(r.Settings.CryptoRuns, 1))
	w("Ratios are swanpath's packet rate over the other's. With two rounds or more, sp/secgw and sp/ceiling are the\n")
	w("median of the per-round ratios (each round's measurements ran back to back, so a slow spell of the machine\n")
	w("falls on all of them), with their lowest and highest in brackets.\n\n")
	w("| dir | suite | frames | SAs | encap | crypto PMD | swanpath Mpps | Gbps | cyc/pkt | ipsec-secgw Mpps | Gbps | cyc/pkt | ceiling Mpps | Gbps | cyc/pkt | sp/secgw | sp/ceiling |\n")
	w("|---|---|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	var fn footnotes
	for _, row := range r.Rows {
		encap := "ESP"
		if row.Encap {
			encap = "UDP"
		}
		dir := "out (encrypt)"
		if row.Dir == "in" {
			dir = "in (decrypt)"
		}
		dev := strings.TrimPrefix(row.CryptoDev, "crypto_")
		if row.CryptoMode != "" {
			dev += " (" + row.CryptoMode + ")"
		}
		w("| %s | %s | %s | %d | %s | %s | %s%s | %s | %s | %s%s | %s | %s | %s%s | %s | %s | %s | %s |\n",
			dir, title(SuiteTitles, row.Suite), title(MixTitles, row.Mix), row.SAs, encap, dev,
			mpps(row.Swanpath), fn.mark(row.Swanpath), gbps(row.Swanpath), cycles(row.Swanpath),
			mpps(row.Secgw), fn.mark(row.Secgw), gbps(row.Secgw), cycles(row.Secgw),
			mpps(row.Ceiling), fn.mark(row.Ceiling), gbps(row.Ceiling), cycles(row.Ceiling),
			ratioRounds(row.VsSecgw, row.VsSecgwRounds), ratioRounds(row.VsCeiling, row.VsCeilingRounds))
	}
	if sum := secgwSummary(r.Rows); sum != "" {
		w("\n%s\n", sum)
	}
	if len(fn.list) > 0 {
		w("\nNo number:\n\n")
		for i, s := range fn.list {
			w("%d. %s\n", i+1, oneLine(s))
		}
	}
	ports(w, r.Rows)
	var drops []string
	for _, row := range r.Rows {
		if len(row.Drops) > 0 {
			drops = append(drops, fmt.Sprintf("`%s`: %v", row.Case, row.Drops))
		}
	}
	if len(drops) > 0 {
		w("\nswanpathd's drop counters over whole runs (set-up included):\n\n")
		for _, d := range drops {
			w("- %s\n", d)
		}
	}

	if in := r.Install; in != nil {
		w("\n## Installing SAs through the plugin socket\n\n")
		w("%s\n\n", in.Description)
		w("| | |\n|---|---|\n")
		w("| SA + policy pairs asked for | %d (%s) |\n", in.SAs, title(SuiteTitles, in.Suite))
		w("| installed | %d |\n", in.Installed)
		if in.Error != "" {
			w("| stopped by | %s |\n", oneLine(in.Error))
		}
		w("| time for the requests | %.2f s (%.0f pairs/s) |\n", in.Seconds, in.PerSecond)
		w("| until every installed SA carried packets | %.2f s (%d of %d) |\n", in.LiveAfter, in.Live, in.Installed)
		w("| forwarding before (100 ms samples, median) | %.2f Mpps |\n", in.RateBefore/1e6)
		w("| forwarding during: lowest 100 ms sample | %.2f Mpps |\n", in.RateMin/1e6)
		w("| forwarding during: median | %.2f Mpps |\n", in.RateMedian/1e6)
		w("| samples below half the rate before | %d of %d |\n", in.Stalls, len(in.Samples))
		w("| DPDK heap growth | %.1f MiB, %.0f bytes per pair |\n", float64(int64(in.HeapAfter)-int64(in.HeapBefore))/(1<<20), in.HeapPerSA)
		w("| RSS growth (Go heap, C malloc) | %.1f MiB, %.0f bytes per pair |\n", float64(int64(in.RSSAfter)-int64(in.RSSBefore))/(1<<20), in.RSSPerSA)
	}
	if lb := r.Lab; lb != nil {
		w("\n## The lab: a real tunnel through namespaces and veths\n\n")
		w("swanpathd on the gateway's two veths (net_af_packet), Debian's charon with kernel-libipsec as the peer, ESP %s in UDP; iperf3 TCP for %d s, the receiver's rate. Plaintext: the same hosts and veths with both routers forwarding in the kernel, no IPsec. Latency at a moderate rate: %d pings h1 -> h2 every %s.\n\n",
			lb.ESP, lb.Seconds, lb.Pings, lb.PingInterval)
		if lb.Error != "" {
			w("Not measured: %s\n", oneLine(lb.Error))
		} else {
			w("| | |\n|---|---|\n")
			w("| iperf3 plaintext h1 -> h2 (kernel forwarding) | %.0f Mbit/s |\n", lb.PlainBps/1e6)
			w("| iperf3 through the tunnel h1 -> h2 | %.0f Mbit/s (%.0f%% of plaintext) |\n", lb.TunnelBps/1e6, 100*lb.TunnelBps/lb.PlainBps)
			w("| iperf3 through the tunnel h2 -> h1 | %.0f Mbit/s |\n", lb.TunnelRevBps/1e6)
			w("| fast path latency, receive burst to transmit queue (%d frames) | median %.1f µs, p99 %.1f µs |\n",
				lb.Frames, float64(lb.LatencyMedianNS)/1e3, float64(lb.LatencyP99NS)/1e3)
			w("| ping round trip h1 -> h2 (two hosts, two routers, both ESP ends) | avg %.0f µs, max %.0f µs |\n", lb.RTTAvgUS, lb.RTTMaxUS)
		}
	}
	if len(r.Notes) > 0 {
		w("\n## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
	}
	return b.String()
}

// ports writes the table of what the in-memory ports cost alone, and what
// that leaves of the crypto ceiling.
func ports(w func(string, ...any), rows []Row) {
	have := false
	var fn footnotes
	for _, row := range rows {
		have = have || row.Ports.OK()
		fn.mark(row.Ports)
	}
	if !have {
		if len(fn.list) > 0 {
			w("\nWhat the ports alone cost was not measured: %s\n", oneLine(fn.list[0]))
		}
		return
	}
	fn = footnotes{}
	w("\n### What the ports alone cost\n\n")
	w("dpdk-testpmd forwarding the same pcap (io mode: no parsing, no IPsec) from net_pcap into net_null on the\n")
	w("same worker lcore, once per case: net_pcap's copy of every frame into a fresh mbuf and net_null's free are\n")
	w("part of every number above. A fast path that did nothing but the crypto, at the ceiling's rate, would\n")
	w("take ceiling + ports cycles per frame; \"highest sp/ceiling\" estimates the share of the ceiling that\n")
	w("leaves (1 / (1 + ceiling / ports); an estimate, not a hard bound: crypto-perf's cycles include its own\n")
	w("enqueue and dequeue, which a fast path calling the PMD synchronously does not pay). \"swanpath less\n")
	w("ports\" is swanpath's cycles per frame beyond the ports': its crypto and everything else it does.\n\n")
	w("| dir | suite | frames | SAs | encap | ports alone Mpps | cyc/pkt | swanpath less ports cyc/pkt | ceiling cyc/pkt | sp/ceiling | highest sp/ceiling (est.) |\n")
	w("|---|---|---|--:|---|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range rows {
		encap := "ESP"
		if row.Encap {
			encap = "UDP"
		}
		less := "—"
		if row.Ports.OK() && row.Swanpath.OK() && row.Ports.CyclesPerPkt > 0 && row.Swanpath.CyclesPerPkt > 0 {
			less = fmt.Sprintf("%.0f", row.Swanpath.CyclesPerPkt-row.Ports.CyclesPerPkt)
		}
		w("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
			row.Dir, title(SuiteTitles, row.Suite), title(MixTitles, row.Mix), row.SAs, encap,
			mpps(row.Ports)+fn.mark(row.Ports), cycles(row.Ports), less, cycles(row.Ceiling),
			ratioRounds(row.VsCeiling, row.VsCeilingRounds), ratio(row.CeilingBound))
	}
	if len(fn.list) > 0 {
		w("\nNo number:\n\n")
		for i, s := range fn.list {
			w("%d. %s\n", i+1, oneLine(s))
		}
	}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}

// WriteMarkdown writes the Markdown rendering to path.
func (r *Results) WriteMarkdown(path string) error {
	return os.WriteFile(path, []byte(r.Markdown()), 0o644)
}
