package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/swanpath/swanpath/bench/report"
	"github.com/swanpath/swanpath/bench/sut"
	"github.com/swanpath/swanpath/bench/traffic"
	"github.com/swanpath/swanpath/bridge/pluginsock"
)

const (
	pcapDev = "net_pcap0,rx_pcap=%s,infinite_rx=1"
	nullDev = "net_null0,no-rx=1"
)

// memoryFor is the EAL memory of a DPDK process carrying n SAs.
func memoryFor(n int) int {
	if n <= 1000 {
		return 256
	}
	return 1024
}

// startSwanpathd runs swanpathd with the pcap on the input port of the
// direction and net_null on the output port.
func (b *bench) startSwanpathd(ctx context.Context, pcap string, frames int, inbound bool, sas int) (*sut.Swanpathd, error) {
	cfg := sut.SwanpathdConfig{
		Bin: b.opt.swanpathd, Lcores: b.opt.lcores, MemoryMB: memoryFor(sas),
		CryptoPMD: b.opt.pmd, CryptoMode: b.opt.mode, FilePrefix: b.prefix("sp"),
		Lan: fmt.Sprintf(pcapDev, pcap), Wan: nullDev,
	}
	// room for the case's SAs whatever swanpathd's default
	cfg.MaxSAs = sas + 1024
	if inbound {
		cfg.Lan, cfg.Wan = nullDev, fmt.Sprintf(pcapDev, pcap)
	}
	if frames > 1024 {
		// infinite_rx keeps every frame of the pcap in an mbuf of the pool
		cfg.Mbufs = frames + 8191
	}
	return sut.StartSwanpathd(ctx, cfg)
}

// install adds SA i and its policy for i in [from, to), one request at a
// time as charon's plugin sends them.
func install(ctx context.Context, c *pluginsock.Client, p *traffic.Plan, inbound bool, from, to int) (int, error) {
	for i := from; i < to; i++ {
		if err := c.AddSA(ctx, p.ModelSA(i, inbound)); err != nil {
			return i - from, fmt.Errorf("ADD_SA %d of %d: %w", i+1, len(p.SAs), err)
		}
		if err := c.AddPolicy(ctx, p.ModelPolicy(i, inbound)); err != nil {
			return i - from, fmt.Errorf("ADD_POLICY %d of %d: %w", i+1, len(p.SAs), err)
		}
	}
	return to - from, nil
}

// outPort is the port whose tx counts: the WAN for outbound (ESP leaves
// there), the LAN for inbound (decrypted packets leave there).
func outPort(inbound bool) string {
	if inbound {
		return "lan"
	}
	return "wan"
}

// swanpathResult is what a swanpathd run tells besides its rate.
type swanpathResult struct {
	m          report.Measure
	cryptoDev  string
	cryptoMode string
	sasUsed    int
	drops      map[string]uint64
}

// measureSwanpath runs one case on swanpathd: start, install the plan's
// SAs through the plugin socket, measure the tx rate of the output port.
func (b *bench) measureSwanpath(ctx context.Context, p *traffic.Plan, pcap string, frames int, inbound bool) swanpathResult {
	var res swanpathResult
	fail := func(format string, a ...any) swanpathResult {
		res.m = report.Measure{Error: fmt.Sprintf(format, a...)}
		return res
	}
	d, err := b.startSwanpathd(ctx, pcap, frames, inbound, len(p.SAs))
	if err != nil {
		return fail("swanpathd did not start: %v", err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			b.logf("swanpathd: %v", err)
		}
	}()
	c, err := d.Dial(ctx)
	if err != nil {
		return fail("plugin socket: %v", err)
	}
	defer c.Close()
	t0 := time.Now()
	if n, err := install(ctx, c, p, inbound, 0, len(p.SAs)); err != nil {
		return fail("swanpathd refused the SAs after %d of %d pairs (%.1f s): %v", n, len(p.SAs), time.Since(t0).Seconds(), err)
	}
	if len(p.SAs) > 1 {
		b.logf("  %d SA + policy pairs installed in %.1f s", len(p.SAs), time.Since(t0).Seconds())
	}
	port := outPort(inbound)
	counter := func() (uint64, error) {
		if !d.Alive() {
			return 0, fmt.Errorf("swanpathd exited:\n%s", d.Tail(20))
		}
		return d.Counter(port, "tx")
	}
	if err := sut.WaitFlowing(ctx, counter, 60*time.Second); err != nil {
		st, _ := d.Counters()
		return fail("no packets out of swanpathd's %s port: %v (counters %v)", port, err, nonzero(st))
	}
	w, err := sut.Windows(ctx, counter, b.opt.warmup, b.opt.window, b.opt.windows)
	if err != nil {
		return fail("measuring swanpathd: %v", err)
	}
	res.m = report.Measure{PPS: sut.Median(w), Windows: w}

	if st, err := d.Counters(); err == nil {
		res.drops = drops(st)
		if n := res.drops["drop_auth"]; n > 0 && inbound {
			res.m.Error = fmt.Sprintf("swanpathd failed the ICV of %d of the benchmark's ESP packets", n)
		}
	}
	sas, err := d.SAs()
	if err != nil {
		b.logf("swanpathctl sa: %v", err)
		return res
	}
	for _, s := range sas {
		if s.Packets > 0 {
			res.sasUsed++
		}
		if res.cryptoDev == "" {
			res.cryptoDev, res.cryptoMode = s.Crypto, s.CryptoMode
		}
	}
	return res
}

// drops sums the drop counters of every port, keeping the nonzero ones.
func drops(st map[string]map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range st {
		for k, v := range p {
			if strings.HasPrefix(k, "drop_") && v > 0 {
				out[k] += v
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// nonzero renders the nonzero counters of every port, for error messages.
func nonzero(st map[string]map[string]uint64) string {
	var parts []string
	for port, cs := range st {
		var keys []string
		for k, v := range cs {
			if v > 0 {
				keys = append(keys, fmt.Sprintf("%s=%d", k, v))
			}
		}
		sort.Strings(keys)
		parts = append(parts, port+": "+strings.Join(keys, " "))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
