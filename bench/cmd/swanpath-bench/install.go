package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/swanpath/swanpath/bench/report"
	"github.com/swanpath/swanpath/bench/sut"
	"github.com/swanpath/swanpath/bench/traffic"
)

// installExperiment installs n SA + policy pairs through the plugin socket
// into a swanpathd that forwards traffic meanwhile, and reports the install
// rate, when every new SA carried packets, the lowest forwarding rate in
// 100 ms samples during the install, and the memory the SAs took.
//
// Traffic: every other frame goes through SA 0, installed beforehand; the
// others are spread over the n new SAs. Until its SA is in, a frame meets
// a low-priority drop policy for the whole remote space and is dropped by
// the fast path itself (not handed to the kernel), so the tx rate before
// is SA 0's share, and it climbs as the new SAs go live. A stall of the
// packet loop while tables are rebuilt shows as a sample near zero.
func (b *bench) installExperiment(ctx context.Context, n int) report.Install {
	suite := traffic.GCM128
	res := report.Install{SAs: n, Suite: suite.Name, Description: fmt.Sprintf(
		"swanpathd forwards outbound %s 64 B frames on one worker (every other frame through one SA installed "+
			"beforehand, the rest spread over the SAs being installed, dropped by a drop policy until theirs is in). "+
			"Then %d SA + outbound policy pairs go in through the plugin socket, one request at a time as charon's "+
			"plugin sends them. Live = the drop policy took its last frame (the LAN port's drop_policy counter, read "+
			"every 10 ms, stopped rising; the time is the first read that showed its final value), confirmed by every "+
			"new SA having counted packets (`swanpathctl sa`). Forwarding is the WAN tx "+
			"counter sampled every 100 ms. Memory: DPDK heap (telemetry /eal/heap_info) and RSS of swanpathd "+
			"before and after.", suite.Title, n)}
	fail := func(format string, a ...any) report.Install {
		res.Error = fmt.Sprintf(format, a...)
		return res
	}
	plan, err := traffic.NewPlan(suite, n+1, false)
	if err != nil {
		return fail("%v", err)
	}
	frames := 2 * n
	pick := func(k int) int {
		if k%2 == 0 {
			return 0
		}
		return 1 + (k/2)%n
	}
	pcap := filepath.Join(b.tmp, "install.pcap")
	if err := plan.PcapPick(pcap, traffic.Mix64, false, frames, pick); err != nil {
		return fail("pcap: %v", err)
	}
	d, err := b.startSwanpathd(ctx, pcap, frames, false, n)
	if err != nil {
		return fail("swanpathd did not start: %v", err)
	}
	defer d.Close()
	c, err := d.Dial(ctx)
	if err != nil {
		return fail("plugin socket: %v", err)
	}
	defer c.Close()
	if err := c.AddPolicy(ctx, traffic.DropPolicy()); err != nil {
		return fail("drop policy: %v", err)
	}
	if _, err := install(ctx, c, plan, false, 0, 1); err != nil {
		return fail("first SA: %v", err)
	}
	tx := func() (uint64, error) { return d.Counter("wan", "tx") }
	if err := sut.WaitFlowing(ctx, tx, 60*time.Second); err != nil {
		return fail("no traffic through the first SA: %v", err)
	}
	before, err := sample100ms(ctx, tx, 2*time.Second)
	if err != nil {
		return fail("%v", err)
	}
	res.RateBefore = sut.Median(before)
	tel, err := d.Telemetry()
	if err == nil {
		defer tel.Close()
		res.HeapBefore, _ = tel.HeapAlloc()
	}
	res.RSSBefore, _ = d.RSS()

	// sample while installing, until every SA is live
	sctx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var during []float64
	wg.Add(1)
	go func() {
		defer wg.Done()
		during, _ = sample100ms(sctx, tx, 0)
	}()

	t0 := time.Now()
	installed, ierr := install(ctx, c, plan, false, 1, n+1)
	res.Installed = installed
	res.Seconds = time.Since(t0).Seconds()
	if ierr != nil {
		res.Error = ierr.Error()
	}
	if res.Seconds > 0 {
		res.PerSecond = float64(installed) / res.Seconds
	}
	// live: the drop policy stops taking frames (every remote net's own
	// policy is in force with its SA), and every installed SA has counted
	// packets. A listing of 10,000 SAs takes a few hundred ms, the drop
	// counter a few: it times the moment, the listing confirms it.
	drops := func() (uint64, error) { return d.Counter("lan", "drop_policy") }
	allLive := func() bool {
		sas, err := d.SAs()
		if err != nil {
			return false
		}
		live := 0
		for _, s := range sas {
			if s.Packets > 0 {
				live++
			}
		}
		res.Live = live - 1 // SA 0 was live before
		return res.Live >= installed
	}
	deadline := time.Now().Add(120 * time.Second)
	byListing := func() time.Time {
		for ctx.Err() == nil && time.Now().Before(deadline) {
			if allLive() {
				return time.Now()
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Time{}
	}
	var liveAt time.Time
	if installed < n {
		// the frames of the SAs that did not go in meet the drop policy
		// for good: the listings time it
		liveAt = byListing()
	} else {
		prev, _ := drops()
		lastRise := time.Now()
		for ctx.Err() == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			k, err := drops()
			if err != nil {
				continue
			}
			if k != prev {
				prev, lastRise = k, time.Now()
				continue
			}
			if time.Since(lastRise) < 300*time.Millisecond {
				continue
			}
			// quiet for 300 ms: were they all live then? If not (a
			// policy without its SA?), the listings time it
			if allLive() {
				liveAt = lastRise
			} else {
				liveAt = byListing()
			}
			break
		}
	}
	if liveAt.IsZero() {
		liveAt = time.Now()
	}
	res.LiveAfter = liveAt.Sub(t0).Seconds()
	stopSampling()
	wg.Wait()
	res.Samples = during
	if len(during) > 0 {
		res.RateMin = during[0]
		for _, r := range during {
			res.RateMin = min(res.RateMin, r)
			if r < res.RateBefore/2 {
				res.Stalls++
			}
		}
		res.RateMedian = sut.Median(during)
	}
	if tel != nil {
		res.HeapAfter, _ = tel.HeapAlloc()
	}
	res.RSSAfter, _ = d.RSS()
	if installed > 0 {
		res.HeapPerSA = float64(int64(res.HeapAfter)-int64(res.HeapBefore)) / float64(installed)
		res.RSSPerSA = float64(int64(res.RSSAfter)-int64(res.RSSBefore)) / float64(installed)
	}
	if !d.Alive() {
		res.Error += "; swanpathd exited: " + d.Tail(10)
	}
	return res
}

// sample100ms reads c every 100 ms and returns the rate of each interval,
// for d or (d = 0) until ctx ends.
func sample100ms(ctx context.Context, c sut.Counter, d time.Duration) ([]float64, error) {
	var rates []float64
	prevN, err := c()
	if err != nil {
		return nil, err
	}
	prevT := time.Now()
	end := time.Now().Add(d)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for d == 0 || time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return rates, nil
		case <-t.C:
		}
		n, err := c()
		now := time.Now()
		if err != nil {
			return rates, err
		}
		rates = append(rates, float64(n-prevN)/now.Sub(prevT).Seconds())
		prevN, prevT = n, now
	}
	return rates, nil
}
