package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/swanpath/swanpath/bench/cryptoperf"
	"github.com/swanpath/swanpath/bench/report"
	"github.com/swanpath/swanpath/bench/secgw"
	"github.com/swanpath/swanpath/bench/sut"
	"github.com/swanpath/swanpath/bench/testpmd"
	"github.com/swanpath/swanpath/bench/traffic"
)

// cases lists what the run measures, in table order.
func (b *bench) cases() []report.Case {
	suites, mixes := traffic.Suites, b.mixes
	dirs := []string{"out", "in"}
	sas := []int{1, b.opt.manySAs}
	encaps := []bool{false, true}
	if b.opt.quick {
		suites = []traffic.Suite{traffic.GCM128}
		mixes = []traffic.Mix{traffic.Mix64, traffic.Mix1420}
		sas = []int{1}
		encaps = []bool{false}
	}
	if b.opt.manySAs <= 1 {
		sas = []int{1}
	}
	var out []report.Case
	for _, s := range suites {
		for _, d := range dirs {
			for _, n := range sas {
				for _, e := range encaps {
					for _, m := range mixes {
						c := report.Case{Dir: d, Suite: s.Name, Mix: m.Name, SAs: n, Encap: e}
						if b.opt.only == "" || strings.Contains(c.String(), b.opt.only) {
							out = append(out, c)
						}
					}
				}
			}
		}
	}
	return out
}

func (b *bench) mix(name string) traffic.Mix {
	for _, m := range b.mixes {
		if m.Name == name {
			return m
		}
	}
	panic("unknown mix " + name)
}

// runCase measures one case on swanpathd and ipsec-secgw, back to back on
// the same pcap and SAs, and adds the crypto ceiling.
func (b *bench) runCase(ctx context.Context, c report.Case) report.Row {
	suite, _ := traffic.SuiteByName(c.Suite)
	mix := b.mix(c.Mix)
	inbound := c.Dir == "in"
	row := report.Row{Case: c, MeanFrame: mix.MeanSize()}
	failAll := func(err error) report.Row {
		m := report.Measure{Error: err.Error()}
		row.Swanpath, row.Secgw, row.Ceiling, row.Ports = m, m, m, m
		return row
	}
	plan, err := traffic.NewPlan(suite, c.SAs, c.Encap)
	if err != nil {
		return failAll(err)
	}
	pcap := filepath.Join(b.tmp, c.String()+".pcap")
	frames, err := plan.Pcap(pcap, mix, inbound)
	if err != nil {
		return failAll(fmt.Errorf("writing the pcap: %w", err))
	}
	defer os.Remove(pcap)

	// the two systems take turns, -rounds times, so that a slow spell of
	// the machine falls on both; each one's rate is the median of all its
	// windows
	var vdev string
	for r := 0; r < b.opt.rounds; r++ {
		sp := b.measureSwanpath(ctx, plan, pcap, frames, inbound)
		if r == 0 {
			row.Swanpath, row.CryptoDev, row.CryptoMode = sp.m, sp.cryptoDev, sp.cryptoMode
			row.SAsUsed, row.Drops = sp.sasUsed, sp.drops
			vdev = b.vdevFor(suite, sp.cryptoDev)
		} else {
			row.Swanpath = mergeWindows(row.Swanpath, sp.m)
		}
		if sp.m.OK() && sp.sasUsed < c.SAs {
			row.Swanpath.Error = fmt.Sprintf("only %d of %d SAs carried packets", sp.sasUsed, c.SAs)
		}
		if ctx.Err() != nil {
			return failAll(ctx.Err())
		}
		sg := b.measureSecgw(ctx, plan, pcap, frames, inbound, vdev)
		if r == 0 {
			row.Secgw = sg
		} else {
			row.Secgw = mergeWindows(row.Secgw, sg)
		}
		// the crypto ceiling in the same round, so that the share of it
		// pairs numbers measured moments apart
		// (a failed one stays failed: no more runs)
		switch {
		case r == 0:
			row.Ceiling = b.ceiling(ctx, suite, inbound, vdev, mix)
			row.Ports = b.measurePorts(ctx, pcap, frames, len(plan.SAs))
		case row.Ceiling.Error == "":
			row.Ceiling = mergeWindows(row.Ceiling, b.ceiling(ctx, suite, inbound, vdev, mix))
		}
		if !row.Swanpath.OK() && !row.Secgw.OK() {
			break // nothing to gain from another round
		}
	}
	if row.CryptoDev == "" {
		row.CryptoDev = vdev + "0 (expected)"
	}

	for _, m := range []*report.Measure{&row.Swanpath, &row.Secgw, &row.Ceiling, &row.Ports} {
		m.Fill(row.MeanFrame, b.tscHz)
	}
	row.Ratios()
	row.RoundRatios(b.opt.windows, b.opt.cryptoRuns)
	return row
}

// vdevFor is the crypto PMD for ipsec-secgw and the ceiling: the one
// swanpathd ran the SAs on (crypto_aesni_gcm0 -> crypto_aesni_gcm), or,
// when swanpathd did not say, the one it would pick: the configured PMD
// if it has the suite, else ipsec-mb's aesni_mb.
func (b *bench) vdevFor(s traffic.Suite, dev string) string {
	if dev != "" {
		return strings.TrimRight(dev, "0123456789")
	}
	if s.AEAD() && b.opt.pmd == "aesni_gcm" {
		return "crypto_aesni_gcm"
	}
	if b.opt.pmd == "openssl" {
		return "crypto_openssl"
	}
	return "crypto_aesni_mb"
}

// measureSecgw runs ipsec-secgw on the same pcap with the same SAs.
func (b *bench) measureSecgw(ctx context.Context, p *traffic.Plan, pcap string, frames int, inbound bool, vdev string) report.Measure {
	if why := secgw.Unsupported(p); why != "" {
		return report.Measure{Error: why}
	}
	dir, err := os.MkdirTemp(b.tmp, "secgw")
	if err != nil {
		return report.Measure{Error: err.Error()}
	}
	defer os.RemoveAll(dir)
	r, err := secgw.Start(ctx, secgw.Config{
		Bin: b.opt.secgw, Plan: p, Inbound: inbound, Pcap: pcap, Frames: frames,
		CryptoVdev: vdev, CPUCrypto: b.opt.mode == "cpu", Lcores: b.opt.lcores,
		MemoryMB: memoryFor(len(p.SAs)), FilePrefix: b.prefix("sg"), Dir: dir,
	})
	if err != nil {
		return report.Measure{Error: "ipsec-secgw: " + err.Error()}
	}
	defer func() {
		if err := r.Close(); err != nil {
			b.logf("ipsec-secgw: %v", err)
		}
	}()
	w, err := sut.Windows(ctx, r.Tx, b.opt.warmup, b.opt.window, b.opt.windows)
	if err != nil {
		return report.Measure{Error: "measuring ipsec-secgw: " + err.Error()}
	}
	return report.Measure{PPS: sut.Median(w), Windows: w}
}

// measurePorts runs dpdk-testpmd's io forwarding on the same pcap and
// ports: what reading and dropping the frames costs without any IPsec.
func (b *bench) measurePorts(ctx context.Context, pcap string, frames, sas int) report.Measure {
	r, err := testpmd.Start(ctx, testpmd.Config{
		Pcap: pcap, Frames: frames, Lcores: b.opt.lcores,
		MemoryMB: memoryFor(sas), FilePrefix: b.prefix("pm"),
	})
	if err != nil {
		return report.Measure{Error: err.Error()}
	}
	defer func() {
		if err := r.Close(); err != nil {
			b.logf("dpdk-testpmd: %v", err)
		}
	}()
	w, err := sut.Windows(ctx, r.Tx, b.opt.warmup, b.opt.window, b.opt.windows)
	if err != nil {
		return report.Measure{Error: "measuring dpdk-testpmd: " + err.Error()}
	}
	return report.Measure{PPS: sut.Median(w), Windows: w}
}

// ceiling is the crypto PMD's rate on one core for the mix: the harmonic
// combination of its rates at the ESP payload length of each frame size,
// one value per dpdk-test-crypto-perf run (the windows of the measure).
func (b *bench) ceiling(ctx context.Context, s traffic.Suite, inbound bool, vdev string, m traffic.Mix) report.Measure {
	sizes := map[int]bool{}
	var bufs []int
	for _, f := range m.Sizes {
		if n := s.ESPPayloadLen(f); !sizes[n] {
			sizes[n] = true
			bufs = append(bufs, n)
		}
	}
	t0 := time.Now()
	var runs []float64
	for range b.opt.cryptoRuns {
		res, _, err := cryptoperf.Run(ctx, cryptoperf.Config{
			Suite: s, Inbound: inbound, Vdev: vdev, Buffers: bufs, Ops: b.opt.cryptoOps,
			Lcores: b.opt.lcores, MemoryMB: 256, FilePrefix: b.prefix("cp"),
		})
		if err != nil {
			return report.Measure{Error: err.Error()}
		}
		var t float64
		for _, f := range m.Sizes {
			t += 1 / res[s.ESPPayloadLen(f)]
		}
		runs = append(runs, float64(len(m.Sizes))/t)
	}
	b.logf("  crypto ceiling (%s %s on %s, buffers %v) took %.1f s", s.Title,
		map[bool]string{false: "encrypt", true: "decrypt"}[inbound], vdev, bufs, time.Since(t0).Seconds())
	return report.Measure{PPS: sut.Median(runs), Windows: runs}
}

// mergeWindows adds the windows of a later round to a measure; the rate is
// the median of all. A failed round keeps the first error.
func mergeWindows(a, b report.Measure) report.Measure {
	if a.Error != "" {
		return a
	}
	if b.Error != "" {
		a.Error = b.Error
		return a
	}
	a.Windows = append(a.Windows, b.Windows...)
	a.PPS = sut.Median(a.Windows)
	return a
}
