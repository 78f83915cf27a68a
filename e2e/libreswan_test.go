package e2e

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/lab"
)

// libreswanCase is one way the libreswan gateway meets its peer.
type libreswanCase struct {
	name string
	// encap: encapsulation=yes on both sides, ESP in UDP 4500 on the WAN;
	// else plain ESP (IP protocol 50)
	encap bool
	// kernelPeer: the peer is Debian's charon with kernel-netlink on a
	// second kernel host (Linux's own ESP, lab Options.KernelPeer); else
	// charon with kernel-libipsec in pr, which always encapsulates
	kernelPeer bool
}

// TestLibreswanGateway: a libreswan gateway end to end. The gateway is a
// user-mode-Linux kernel (Linux's own XFRM and ESP) with a Debian root of
// its own holding libreswan 4.10; swanpathd runs there with source.kind =
// "xfrm" (DPDK on the instance's veths, without hugepages, both lcores on
// its one CPU). pluto brings the tunnel up with `ipsec auto --up` (IKEv2,
// PSK, esp=aes_gcm128-null, tunnel mode between the lab's LANs) against a
// strongSwan peer: with encapsulation=yes Debian's charon with
// kernel-libipsec in pr (which always encapsulates), with
// encapsulation=no charon with kernel-netlink on a second kernel host
// (plain ESP, which kernel-libipsec cannot do). Then, for each: ping both
// ways, also from the gateway itself into the tunnel; a paced UDP stream
// each way, every datagram once and intact; a 10-second iperf3 each way;
// the WAN carries only IKE and ESP of the case's kind, and no ESP sequence
// number twice on one SPI (a second encryptor, the kernel, would repeat
// them); the kernel's copy of the outbound SA shows the fast path's
// sequence number and byte count, written back, and not more; `ipsec
// trafficstatus` agrees with `swanpathctl sa`.
func TestLibreswanGateway(t *testing.T) {
	if why := lab.UMLAvailable(); why != "" {
		t.Skip(why)
	}
	for _, c := range []libreswanCase{
		{name: "esp-in-udp", encap: true},
		{name: "plain-esp", kernelPeer: true},
	} {
		t.Run(c.name, func(t *testing.T) { testLibreswanGateway(t, c) })
	}
}

// startLibreswanGateway builds the lab of c (its kernel hosts booted),
// starts swanpathd, the peer and pluto, brings the tunnel up with `ipsec
// auto --up` and waits until the fast path has both SAs and the outbound
// policy bound to its SA. A failing test gets the gateway's state
// (XFRMGateway.Diagnose) while the lab still stands.
func startLibreswanGateway(t *testing.T, ctx context.Context, c libreswanCase) (*lab.Lab, *lab.XFRMGateway) {
	t.Helper()
	t0 := time.Now()
	root, err := lab.LibreswanRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := lab.New(t, lab.Options{KernelGatewayRoot: root, KernelPeer: c.kernelPeer})
	t.Logf("root and lab in %v", time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	g, err := l.StartXFRMGateway(ctx, swanpathdBin, swanpathctlBin, lab.LibreswanConn{Encap: c.encap}, lab.Tunnel{Encap: c.encap})
	if g != nil {
		// registered after the lab's own cleanup: runs before it
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("gateway at the failure:\n%s", g.Diagnose())
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swanpathd, charon, pluto and the tunnel up in %v", time.Since(t1).Round(time.Millisecond))
	// pluto's SAs and policies reach the fast path through the mirror a
	// moment after the kernel has them: what is forwarded in that moment
	// leaves in clear (the kernel no longer encrypts it, see bridge/xfrm
	// bypass.go; a known gap of the XFRM source, in the README). The
	// checks are of the tunnel once mirrored: both SAs, and the outbound
	// policy bound to its SA (pluto installs it last).
	err = lab.PollFor(ctx, "pluto's SAs and outbound policy in the fast path", 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		sas, err := g.D.SAs(ctx)
		if err != nil {
			return false, err
		}
		dirs := map[string]int{}
		for _, s := range sas {
			dirs[s.Dir]++
		}
		if dirs["in"] != 1 || dirs["out"] != 1 {
			return false, fmt.Errorf("SAs in the fast path: %+v", sas)
		}
		return outBound(ctx, g.D)
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, g
}

func testLibreswanGateway(t *testing.T, c libreswanCase) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, g := startLibreswanGateway(t, ctx, c)
	gw := l.Host(lab.GW).(*lab.UML)
	t2 := time.Now()
	cw, err := captureWAN(l)
	if err != nil {
		t.Fatal(err)
	}
	defer cw.stop()
	// the gateway's own traffic for the protected subnets leaves in
	// clear into the TAP (swanpathd's bypass pair), not through the
	// kernel's ESP
	pingAndStream(t, ctx, l, gw)
	// TCP through the tunnel, 10 s each way (iperf3 in the LAN hosts,
	// server in h2)
	iperfBothWays(t, ctx, l, lab.H2, lab.H2Addr, lab.H1, 10)
	pkts, err := cw.stop()
	if err != nil {
		t.Fatal(err)
	}
	w, err := checkESPKind(pkts, lab.GWWanAddr, lab.PRWanAddr, c.encap)
	if err != nil {
		t.Error(err)
	}
	if w.toPeer < 600 || w.fromPeer < 600 {
		t.Errorf("ESP on the WAN: %d packets gw -> pr, %d pr -> gw; want the traffic both ways", w.toPeer, w.fromPeer)
	}
	// one encryptor per SA: found by this test as ESP sequence numbers
	// 1.. sent twice on the outbound SA (the kernel encrypted the first
	// pings with its copy before swanpathd's per-policy bypass pair was
	// in; the global bypass pairs fixed it, bridge/xfrm/bypass.go)
	again, seqErr := uniqueESPSeq(pkts, lab.GWWanAddr)
	if again > 0 {
		t.Logf("%d ESP frames from the gateway arrived twice, byte for byte (a duplicate on the way, not a second encryptor)", again)
	}
	if seqErr != nil {
		t.Errorf("AES-GCM IV reuse: %v", seqErr)
	}
	t.Logf("traffic: WAN ESP gw -> pr %d, pr -> gw %d, IKE %d (%v)", w.toPeer, w.fromPeer, w.ike, time.Since(t2).Round(time.Millisecond))
	checkLibreswanCounters(t, ctx, l, g, c.encap)
}

// checkLibreswanCounters: the kernel's copy of the outbound SA carries the
// fast path's counters, written back every second, and its oseq is the
// last sequence number the fast path sent (the kernel sent nothing of its
// own); the kernel's XFRM output error counters stay 0; `ipsec
// trafficstatus` agrees with `swanpathctl sa`. Traffic has stopped.
func checkLibreswanCounters(t *testing.T, ctx context.Context, l *lab.Lab, g *lab.XFRMGateway, encap bool) {
	t.Helper()
	gw := l.Host(lab.GW)
	var out, in ctl.SA
	var kBytes, kPkts, kSeq uint64
	err := lab.PollFor(ctx, "the fast path's counters in the kernel's SA", 15*time.Second, 200*time.Millisecond, func() (bool, error) {
		sas, err := g.D.SAs(ctx)
		if err != nil {
			return false, err
		}
		var o, i []ctl.SA
		for _, s := range sas {
			switch s.Dir {
			case "out":
				o = append(o, s)
			case "in":
				i = append(i, s)
			}
		}
		if len(o) != 1 || len(i) != 1 || len(sas) != 2 {
			return false, lab.Abort(fmt.Errorf("swanpathd's SAs: want one in, one out: %+v", sas))
		}
		out, in = o[0], i[0]
		st, err := gw.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", lab.GWWanAddr, "dst", lab.PRWanAddr, "proto", "esp", "spi", out.SPI)
		if err != nil {
			return false, err
		}
		k, err := parseKernelSA(st)
		if err != nil {
			return false, err
		}
		kBytes, kPkts, kSeq = k.bytes, k.packets, k.oseq
		return kPkts == out.Packets && kBytes == out.Bytes, fmt.Errorf("kernel %d bytes %d packets oseq %d; fast path %d bytes %d packets", kBytes, kPkts, kSeq, out.Bytes, out.Packets)
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.Aead == "" || out.Encap != encap {
		t.Errorf("outbound SA in the fast path: %+v; want AES-GCM, encap %v", out, encap)
	}
	// oseq is the last sequence number the fast path sent: one per packet
	if kSeq != out.Packets {
		t.Errorf("kernel's oseq %d, fast path sent %d packets", kSeq, out.Packets)
	}
	if xs, err := gw.Exec(ctx, "cat", "/proc/net/xfrm_stat"); err == nil {
		for _, k := range []string{"XfrmOutStateSeqError", "XfrmOutStateModeError", "XfrmOutNoStates", "XfrmOutPolBlock"} {
			if m := regexp.MustCompile(k + `\s+(\d+)`).FindStringSubmatch(xs); m != nil && m[1] != "0" {
				t.Errorf("the kernel's XFRM output %s = %s:\n%s", k, m[1], xs)
			}
		}
	}
	// ipsec trafficstatus: pluto reads the kernel's SAs, which carry the
	// fast path's counts (the inbound one's written back within a second)
	near := func(a, b uint64) bool { return a+2000 >= b && b+2000 >= a }
	var ts []lab.Traffic
	err = lab.PollFor(ctx, "ipsec trafficstatus agrees with swanpathctl sa", 10*time.Second, 200*time.Millisecond, func() (bool, error) {
		var terr error
		if ts, terr = g.Pluto.TrafficStatus(ctx); terr != nil || len(ts) != 1 {
			return false, fmt.Errorf("ipsec trafficstatus: %v %+v", terr, ts)
		}
		sas, err := g.D.SAs(ctx)
		if err != nil {
			return false, err
		}
		for _, s := range sas {
			if s.Dir == "in" {
				in = s
			}
		}
		return near(ts[0].OutBytes, out.Bytes) && near(ts[0].InBytes, in.Bytes),
			fmt.Errorf("ipsec trafficstatus says in %d out %d bytes, swanpathctl sa in %d out %d", ts[0].InBytes, ts[0].OutBytes, in.Bytes, out.Bytes)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("outbound SA %s: fast path %d packets %d bytes, kernel oseq %d; trafficstatus in %d out %d, swanpathctl in %d out %d",
		out.SPI, out.Packets, out.Bytes, kSeq, ts[0].InBytes, ts[0].OutBytes, in.Bytes, out.Bytes)
}

// uniqueESPSeq fails if any ESP (in UDP) from src on the WAN repeats a
// sequence number on its SPI with other bytes: one encryptor per SA. It
// counts the frames seen twice byte for byte (the same frame again).
func uniqueESPSeq(pkts []lab.Packet, src string) (int, error) {
	type key struct{ spi, seq uint32 }
	seen := map[key]lab.Packet{}
	var dups []string
	n, same := 0, 0
	for _, e := range espSeqsFrom(pkts, src) {
		p, k := e.p, key{e.spi, e.seq}
		if q, ok := seen[k]; ok {
			if bytes.Equal(q.Data, p.Data) {
				same++ // the same frame delivered again: not a second encryptor
				continue
			}
			dups = append(dups, fmt.Sprintf("spi 0x%08x seq %d: %s at %s and %s at %s", k.spi, k.seq,
				q, q.Time.Format("15:04:05.000000"), p, p.Time.Format("15:04:05.000000")))
			continue
		}
		seen[k] = p
		n++
	}
	if len(dups) > 0 {
		return same, fmt.Errorf("%d ESP sequence numbers sent twice from %s (two encryptors of one SA), first: %s", len(dups), src, strings.Join(dups[:min(len(dups), 5)], "; "))
	}
	if n == 0 {
		return same, fmt.Errorf("no ESP from %s with its header captured", src)
	}
	return same, nil
}

func hexu(s string) uint64 {
	v, _ := strconv.ParseUint(s, 16, 64)
	return v
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// pingAndStream: through a kernel gateway's tunnel, h1 and h2 ping each
// other, the gateway pings h2 from its LAN address (its own traffic into
// the tunnel), and a paced UDP stream runs each way (every datagram once,
// intact).
func pingAndStream(t *testing.T, ctx context.Context, l *lab.Lab, gw *lab.UML) {
	t.Helper()
	for _, p := range []struct{ from, to string }{{lab.H1, lab.H2Addr}, {lab.H2, lab.H1Addr}} {
		if err := l.Ping(ctx, p.from, p.to, 5); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gw.Exec(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", lab.GWLanAddr, lab.H2Addr); err != nil {
		t.Fatalf("ping from the gateway into the tunnel: %v", err)
	}
	l.RunUDPSeqs(ctx, t,
		lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7001, Rate: 200, Duration: 3 * time.Second, Size: 300},
		lab.SeqOptions{From: lab.H2, To: lab.H1, ToAddr: lab.H1Addr, Port: 7002, Rate: 200, Duration: 3 * time.Second, Size: 300})
}
