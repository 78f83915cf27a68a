package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bench/report"
	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/lab"
)

// labExperiment runs the lab's real tunnel (swanpathd on af_packet veths,
// Debian's charon with kernel-libipsec as the peer, ESP in UDP) and
// measures iperf3 TCP through it beside plaintext through the same veths
// (both routers forwarding in the kernel, no IPsec), and, at a moderate
// rate (pings every 10 ms), the latency the fast path adds, from its own
// histogram (receive burst to transmit queue) and from ping's round trips.
func (b *bench) labExperiment(ctx context.Context, swanpathctl string) report.Lab {
	testing.Init() // the lab asks testing.Short
	res := report.Lab{ESP: "aes128gcm16", Seconds: b.opt.labSeconds, PingInterval: "10ms", Pings: 100 * b.opt.labSeconds}
	fail := func(what string, err error) report.Lab {
		res.Error = what + ": " + err.Error()
		b.logf("  lab: %s", res.Error)
		return res
	}

	// plaintext: the gateway's veths carry addresses, both routers forward
	r := lab.NewRunner("swanpath-bench-lab")
	err := r.Run(func() {
		l := lab.New(r, lab.Options{GatewayAddrs: true})
		for _, c := range [][]string{
			{lab.GW, "ip", "route", "add", "10.2.0.0/24", "via", l.PeerAddr(), "dev", lab.GWWan},
			{lab.PR, "ip", "route", "add", "10.1.0.0/24", "via", lab.GWWanAddr, "dev", lab.PRWan},
		} {
			if _, err := l.NS(c[0]).Exec(ctx, c[1:]...); err != nil {
				r.Fatal(err)
			}
		}
		ir, err := l.Iperf3(ctx, lab.H2, lab.H2Addr, lab.H1, res.Seconds, false)
		if err != nil {
			r.Fatal(err)
		}
		res.PlainBps = ir.BitsPerSec
		b.logf("  lab: plaintext h1 -> h2 %.0f Mbit/s", ir.BitsPerSec/1e6)
	})
	if err != nil {
		return fail("plaintext", err)
	}

	r = lab.NewRunner("swanpath-bench-lab")
	err = r.Run(func() {
		l := lab.New(r, lab.Options{})
		g, err := l.StartSwanpathGateway(ctx, b.opt.swanpathd, swanpathctl, lab.Tunnel{ESPProposals: res.ESP, Encap: true})
		if err != nil {
			r.Fatal(err)
		}
		for _, reverse := range []bool{false, true} {
			ir, err := l.Iperf3(ctx, lab.H2, lab.H2Addr, lab.H1, res.Seconds, reverse)
			if err != nil {
				r.Fatal(err)
			}
			if reverse {
				res.TunnelRevBps = ir.BitsPerSec
			} else {
				res.TunnelBps = ir.BitsPerSec
			}
		}
		b.logf("  lab: tunnel h1 -> h2 %.0f Mbit/s, h2 -> h1 %.0f Mbit/s", res.TunnelBps/1e6, res.TunnelRevBps/1e6)

		before, err := latencyOf(g.D.Control)
		if err != nil {
			r.Fatal(err)
		}
		out, err := l.NS(lab.H1).Exec(ctx, "ping", "-n", "-q", "-i", "0.01", "-c", strconv.Itoa(res.Pings), lab.H2Addr)
		if err != nil {
			r.Fatal(fmt.Errorf("ping: %w\n%s", err, out))
		}
		after, err := latencyOf(g.D.Control)
		if err != nil {
			r.Fatal(err)
		}
		d := after.Since(before)
		res.Frames = d.Frames()
		res.LatencyMedianNS = int64(d.Quantile(0.5))
		res.LatencyP99NS = int64(d.Quantile(0.99))
		if m := pingRTT.FindStringSubmatch(out); m != nil {
			res.RTTAvgUS, _ = strconv.ParseFloat(m[2], 64)
			res.RTTAvgUS *= 1000
			res.RTTMaxUS, _ = strconv.ParseFloat(m[3], 64)
			res.RTTMaxUS *= 1000
		}
		b.logf("  lab: %d pings, fast path latency of %d frames: median %v, p99 %v; ping rtt avg %.0f µs",
			res.Pings, res.Frames, time.Duration(res.LatencyMedianNS), time.Duration(res.LatencyP99NS), res.RTTAvgUS)
	})
	if err != nil {
		return fail("tunnel", err)
	}
	return res
}

// "rtt min/avg/max/mdev = 0.123/0.456/0.789/0.012 ms"
var pingRTT = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/`)

// latencyOf reads swanpathd's latency histogram through its control socket.
func latencyOf(sock string) (dataplane.Latency, error) {
	rep, err := ctl.Call(sock, "stats")
	if err != nil {
		return dataplane.Latency{}, err
	}
	if rep.Stats == nil || rep.Stats.Latency == nil {
		return dataplane.Latency{}, fmt.Errorf("swanpathd reports no latency histogram")
	}
	return rep.Stats.Latency.Histogram(), nil
}
