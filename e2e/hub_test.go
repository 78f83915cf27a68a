package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/lab"
)

// TestHubAndSpoke: the seed's deployment (docs/hub-and-spoke.md). The hub
// is a user-mode-Linux kernel on this machine's root running swanpathd
// (its WAN port in DPDK, the route-based interface ipsec0 for if_id 20)
// and charon with the kernel-swanpath plugin, one connection per spoke
// (remote_addrs = %any, if_id_in/if_id_out = 20); the two spokes are
// kernel hosts with libreswan 4.10 configured as the seed configures them
// (IKEv2 PSK, ike=aes256-sha2, esp=aes_gcm128-null, encapsulation=yes,
// VTI ipsec0 with mark 20, vti-shared, vti-routing, 240.0.0.x/32
// selectors), each on its own WAN subnet behind one router. GRE runs
// between the 240.0.0.x addresses over the route-based tunnels, and the
// spokes' LANs (1500-byte MTU) are routed over GRE through the hub.
//
// Shown: both spokes come up (ipsec trafficstatus on the spokes, swanctl
// --list-sas on the hub, four SAs in swanpathctl sa, each bound to
// ipsec0); spoke1's LAN host reaches spoke2's (ping both ways, iperf3
// both ways); the hub's WAN carries nothing but UDP 4500 between the hub
// and the spokes, most of it ESP (no GRE, no ESP without UDP, no inner
// address in clear); ipsec0's counters and all four SAs' grow.
func TestHubAndSpoke(t *testing.T) {
	hubAndSpoke(t, lab.HubStrongSwan)
}

// TestHubAndSpokeLibreswanHub: the seed's deployment with the seed's own
// hub: pluto on the hub with ap1's ipsec.conf (a connection per spoke,
// right=%any, mark 20 with vti-interface ipsec0, vti-shared,
// vti-routing) on a kernel host with the libreswan root, and swanpathd
// with the XFRM mirror and [[interface]] ipsec0 for mark 20 in place of
// the kernel's VTI (pluto's updown finds ipsec0 there and routes the
// spokes' 240.0.0.x into it). The same checks as TestHubAndSpoke, with
// pluto's views on the hub (ipsec trafficstatus), the rekey started by
// the hub's pluto, and: the hub kernel's copies of the outbound SAs sent
// nothing of their own (their counters and oseq are the fast path's,
// written back), and the hub's `ipsec trafficstatus` agrees with
// `swanpathctl sa`.
func TestHubAndSpokeLibreswanHub(t *testing.T) {
	hubAndSpoke(t, lab.HubLibreswan)
}

// hubAndSpoke is TestHubAndSpoke with the hub's IKE daemon ike.
func hubAndSpoke(t *testing.T, ike lab.HubIKE) {
	if why := lab.UMLAvailable(); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, hub, spokes := startHubAndSpoke(t, ctx, ike)
	s1, s2 := lab.Spokes[0], lab.Spokes[1]

	t.Run("up", func(t *testing.T) {
		for i, s := range lab.Spokes {
			ts, err := spokes[i].TrafficStatus(ctx)
			if err != nil || len(ts) != 1 || ts[0].Conn != s.Conn() {
				t.Errorf("%s: ipsec trafficstatus: %+v %v", s.Role, ts, err)
			}
			st, err := spokes[i].Ipsec(ctx, "status")
			if err != nil || !strings.Contains(st, "Total IPsec connections: loaded 1, active 1") {
				t.Errorf("%s: ipsec status: %v\n%s", s.Role, err, lastLines(st, 20))
			}
		}
		if ike == lab.HubLibreswan {
			ts, err := hub.Pluto.TrafficStatus(ctx)
			conns := map[string]bool{}
			for _, x := range ts {
				conns[x.Conn] = true
			}
			for _, s := range lab.Spokes {
				if !conns[s.HubConn()] {
					t.Errorf("hub: ipsec trafficstatus has no %s: %+v %v", s.HubConn(), ts, err)
				}
			}
		} else {
			ikes, err := hub.Charon.ListSAs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range lab.Spokes {
				ike, c, ok := lab.Child(ikes, s.HubConn())
				if !ok || ike.Name != s.HubConn() {
					t.Errorf("hub: no CHILD_SA %s installed: %+v", s.HubConn(), ikes)
					continue
				}
				t.Logf("hub: %s %v <-> %v", c.Name, c.LocalTS, c.RemoteTS)
			}
		}
		if _, _, err := hubSAs(ctx, hub); err != nil {
			t.Fatal(err)
		}
	})
	sas0, _, err := hubSAs(ctx, hub)
	if err != nil {
		t.Fatal(err)
	}
	ifc0 := hubIfcStats(t, ctx, hub)
	wan, err := l.Capture(lab.Hub, lab.HubWan, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("spoke to spoke", func(t *testing.T) {
		for _, p := range []struct{ from, to string }{{s1.LanHost, s2.HostAddr()}, {s2.LanHost, s1.HostAddr()}} {
			if err := l.Ping(ctx, p.from, p.to, 5); err != nil {
				t.Fatal(err)
			}
		}
		iperfBothWays(t, ctx, l, s2.LanHost, s2.HostAddr(), s1.LanHost, 5)
	})
	pkts, err := wan.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("hub WAN carries only ESP-in-UDP", func(t *testing.T) {
		esp, ike, err := checkHubWAN(pkts)
		t.Logf("hub WAN: %d frames, %d ESP-in-UDP, %d IKE/keep-alive on 4500", len(pkts), esp, ike)
		if err != nil {
			t.Fatal(err)
		}
		// two pings of 5 and two iperf3 runs, each crossing the hub's
		// WAN twice (in from one spoke, out to the other)
		if esp < 2000 {
			t.Fatalf("%d ESP-in-UDP frames on the hub's WAN, want at least 2000", esp)
		}
	})
	t.Run("counters grow", func(t *testing.T) {
		ifc1 := hubIfcStats(t, ctx, hub)
		for _, k := range []string{"tap_rx", "tap_tx"} {
			if ifc1[k] < ifc0[k]+1000 {
				t.Errorf("%s %s: %d -> %d, want 1000 more at least", lab.RouteIf, k, ifc0[k], ifc1[k])
			}
		}
		t.Logf("%s: %v", lab.RouteIf, ifc1)
		sas1, _, err := hubSAs(ctx, hub)
		if err != nil {
			t.Fatal(err)
		}
		if len(sas1) != 4 {
			t.Fatalf("the installed CHILD_SAs' SAs changed during the test: %v -> %v", sas0, sas1)
		}
		for _, s := range sas1 {
			if s.Packets < sas0[s.SPI].Packets+500 {
				t.Errorf("SA %s %s %s -> %s: %d -> %d packets, want 500 more at least", s.SPI, s.Dir, s.Src, s.Dst, sas0[s.SPI].Packets, s.Packets)
			}
			t.Logf("SA %s %s %s %s -> %s: %d packets, %d bytes", s.Child, s.SPI, s.Dir, s.Src, s.Dst, s.Packets, s.Bytes)
		}
	})
	if ike == lab.HubLibreswan {
		t.Run("the hub kernel's SAs sent nothing, trafficstatus agrees", func(t *testing.T) {
			checkHubKernelSAs(t, ctx, l, hub)
		})
	}
	// a spoke's CHILD_SA rekeyed under traffic, by the spoke (libreswan
	// initiates, the hub answers: swanpathd keeps sending on the old SA
	// until the spoke sends on the new one, bridge/engine/handover.go)
	// and by the hub (the hub initiates, as strongSwan's shorter default
	// rekey time has it do first in the field)
	t.Run("rekey of a spoke's CHILD_SA under traffic, by the spoke", func(t *testing.T) {
		hubRekey(t, ctx, l, hub, s1, s2, func() (string, error) {
			return spokes[0].Ipsec(ctx, "whack", "--rekey-ipsec", "--name", s1.Conn())
		})
	})
	t.Run("rekey of a spoke's CHILD_SA under traffic, by the hub", func(t *testing.T) {
		hubRekey(t, ctx, l, hub, s2, s1, func() (string, error) {
			if ike == lab.HubLibreswan {
				return hubPlutoRekey(ctx, hub, s2)
			}
			return hub.Charon.Swanctl(ctx, "--rekey", "--child", s2.HubConn())
		})
	})
}

// hubRekey: rekey (spoke s's `ipsec whack --rekey-ipsec`, with PFS as
// libreswan does by default, or the hub's `swanctl --rekey`) renews the
// CHILD_SA between the hub and spoke s while a paced UDP stream runs each
// way between s's LAN and other's LAN: every datagram arrives once,
// intact; the hub's CHILD_SA for s has new SPIs, bound to ipsec0.
func hubRekey(t *testing.T, ctx context.Context, l *lab.Lab, hub *lab.HubSite, s, other lab.Spoke, rekey func() (string, error)) {
	before, _, err := hubSAs(ctx, hub)
	if err != nil {
		t.Fatal(err)
	}
	streams := []lab.SeqOptions{
		{From: s.LanHost, To: other.LanHost, ToAddr: other.HostAddr(), Port: 7201, Rate: 100, Duration: 10 * time.Second, Size: 300},
		{From: other.LanHost, To: s.LanHost, ToAddr: s.HostAddr(), Port: 7202, Rate: 100, Duration: 10 * time.Second, Size: 300},
	}
	var seqs []*lab.UDPSeq
	for _, o := range streams {
		q, err := l.StartUDPSeq(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, q)
	}
	// the streams flow through the hub before the rekey
	err = lab.PollFor(ctx, "the streams through the hub", 10*time.Second, 100*time.Millisecond, func() (bool, error) {
		now, _, err := hubSAs(ctx, hub)
		if err != nil {
			return false, err
		}
		for spi, a := range now {
			if a.Dir == "in" && a.Src == s.WanAddr() && a.Packets >= before[spi].Packets+100 {
				return true, nil
			}
		}
		return false, fmt.Errorf("not 100 packets from %s yet", s.Role)
	})
	if err != nil {
		t.Fatal(err)
	}
	// what the hub sent and the spoke dropped, for a failure's log
	wan, err := l.Capture(lab.Hub, lab.HubWan, "udp port 4500")
	if err != nil {
		t.Fatal(err)
	}
	stat0, _ := l.Host(s.Role).Exec(ctx, "cat", "/proc/net/xfrm_stat")
	whacked := time.Now()
	out, err := rekey()
	if err != nil {
		t.Fatalf("rekey: %v\n%s", err, out)
	}
	var lost []time.Time
	for j, q := range seqs {
		r, err := q.Wait(ctx)
		if err != nil || !r.Exact() {
			t.Errorf("UDP %s -> %s across the rekey: %v: %s", streams[j].From, streams[j].To, err, r)
			for _, n := range r.Missing {
				if n < uint64(len(r.SentAt)) {
					lost = append(lost, r.Start.Add(r.SentAt[n]))
				}
			}
		} else {
			t.Logf("UDP %s -> %s across the rekey: %s", streams[j].From, streams[j].To, r)
		}
	}
	pkts, err := wan.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		stat1, _ := l.Host(s.Role).Exec(ctx, "cat", "/proc/net/xfrm_stat")
		t.Logf("%s xfrm_stat grew: %s", s.Role, xfrmStatDiff(stat0, stat1))
		t.Logf("hub WAN around the rekey (asked for at %s):\n%s", whacked.Format("15:04:05.000"),
			spiTimeline(pkts, netip.MustParseAddr(s.WanAddr()), lost))
	}
	err = lab.PollFor(ctx, "the hub's CHILD_SA "+s.HubConn()+" rekeyed", 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		after, _, err := hubSAs(ctx, hub)
		if err != nil {
			return false, err
		}
		for spi, a := range after {
			if (a.Dir == "in" && a.Src == s.WanAddr()) || (a.Dir == "out" && a.Dst == s.WanAddr()) {
				if _, old := before[spi]; old {
					return false, fmt.Errorf("SA %s %s of %s not replaced", spi, a.Dir, s.Role)
				}
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startHubAndSpoke builds the hub-and-spoke lab, starts the hub, then the
// spokes (each brings its tunnel up), and waits until the hub's fast path
// has the four SAs. A failing test gets the hub's and spokes' logs.
func startHubAndSpoke(t *testing.T, ctx context.Context, ike lab.HubIKE) (*lab.Lab, *lab.HubSite, []*lab.Pluto) {
	t.Helper()
	t0 := time.Now()
	root, err := lab.LibreswanRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	topo := lab.HubAndSpoke(root, ike)
	l := lab.New(t, lab.Options{Topology: &topo})
	t.Logf("lab with three kernel hosts in %v", time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	hub, spokes, err := l.StartHubAndSpokes(ctx, swanpathdBin, swanpathctlBin, lab.HubOptions{IKE: ike})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if hub != nil && hub.D != nil {
			for _, v := range []string{"sa", "policy", "stats"} {
				out, err := hub.D.Ctl(context.Background(), v)
				t.Logf("hub swanpathctl %s: %v\n%s", v, err, out)
			}
			// where swanpathd's goroutines are (a slow plugin answer
			// was a FIB rebuild holding the fast path's lock)
			_, _ = l.Host(lab.Hub).Exec(context.Background(), "sh", "-c", "kill -QUIT $(pidof swanpathd)")
			_ = hub.D.Proc().Wait(context.Background())
			path := filepath.Join(l.Dir(), "swanpathd-hub.log")
			_ = os.WriteFile(path, []byte(hub.D.Output()), 0o644)
			t.Logf("hub swanpathd (all of it in %s):\n%s", path, lastLines(hub.D.Output(), 150))
		}
		for i, p := range spokes {
			if p != nil {
				t.Logf("%s pluto:\n%s", lab.Spokes[i].Role, lastLines(p.Output(), 40))
			}
		}
		if hub != nil && hub.Pluto != nil {
			t.Logf("hub pluto:\n%s", lastLines(hub.Pluto.Output(), 60))
		}
		for _, r := range []string{lab.Hub, lab.Spokes[0].Role, lab.Spokes[1].Role} {
			out, _ := l.Host(r).Exec(context.Background(), "sh", "-c", "ip -d link; ip addr; ip route; ip -s xfrm state | grep -v -e enc -e aead -e auth; ip xfrm policy; top -bn1 | head -20")
			t.Logf("%s:\n%s", r, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	err = lab.PollFor(ctx, "the hub's four SAs in the fast path", 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		_, others, err := hubSAs(ctx, hub)
		if err == nil && len(others) > 0 {
			t.Logf("the hub's fast path holds %d SAs of failed tries besides: %+v", len(others), others)
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hub, spokes and tunnels up in %v", time.Since(t1).Round(time.Millisecond))
	return l, hub, spokes
}

// hubSAs are the fast path's SAs of the CHILD_SAs that the hub has
// installed, in and out per spoke: an error unless each is there, bound
// to ipsec0 (if_id 20 for charon, mark 20 for pluto), ESP-in-UDP with the
// spoke's WAN address. others are SAs the fast path holds besides: left
// by a CHILD_SA that failed on a busy machine (UpSpoke's retries) while
// charon could not delete them, until swanpathd's reconciliation does.
// With charon, the installed CHILD_SAs are what charon lists (VICI), and
// swanpathd names each SA by it; pluto has no such view, so with pluto
// the hub's SAs are those of the fast path (the kernel's, mirrored), one
// each way per spoke.
func hubSAs(ctx context.Context, hub *lab.HubSite) (mine map[string]ctl.SA, others []ctl.SA, err error) {
	sas, err := hub.D.SAs(ctx)
	if err != nil {
		return nil, nil, err
	}
	type want struct{ spi, dir, src, dst, conn string }
	var wants []want
	if hub.IKE == lab.HubLibreswan {
		for _, sp := range lab.Spokes {
			for _, w := range []want{{"", "in", sp.WanAddr(), lab.HubWanAddr, sp.HubConn()}, {"", "out", lab.HubWanAddr, sp.WanAddr(), sp.HubConn()}} {
				var found []string
				for _, s := range sas {
					if s.Dir == w.dir && s.Src == w.src && s.Dst == w.dst {
						found = append(found, s.SPI)
					}
				}
				if len(found) != 1 {
					return nil, nil, fmt.Errorf("%s: %d SAs %s %s -> %s in the fast path (%v), want one", sp.HubConn(), len(found), w.dir, w.src, w.dst, found)
				}
				w.spi = found[0]
				wants = append(wants, w)
			}
		}
	} else {
		ikes, err := hub.Charon.ListSAs(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, sp := range lab.Spokes {
			_, c, ok := lab.Child(ikes, sp.HubConn())
			if !ok {
				return nil, nil, fmt.Errorf("hub: no CHILD_SA %s installed", sp.HubConn())
			}
			wants = append(wants, want{"0x" + c.SPIIn, "in", sp.WanAddr(), lab.HubWanAddr, sp.HubConn()},
				want{"0x" + c.SPIOut, "out", lab.HubWanAddr, sp.WanAddr(), sp.HubConn()})
		}
	}
	bySPI := map[string]ctl.SA{}
	for _, s := range sas {
		bySPI[s.SPI] = s
	}
	mine = map[string]ctl.SA{}
	for _, w := range wants {
		s, ok := bySPI[w.spi]
		if !ok {
			return nil, nil, fmt.Errorf("%s: SA %s %s not in the fast path: %+v", w.conn, w.dir, w.spi, sas)
		}
		bound := s.Interface == lab.RouteIf && s.IfID == lab.RouteID
		if hub.IKE == lab.HubLibreswan {
			// pluto marks the VTI's policies only: the SA has no mark
			// and follows the interface of its policies' mark
			bound = s.Interface == lab.RouteIf && s.Mark == "" && s.IfID == 0
		}
		if s.Dir != w.dir || s.Src != w.src || s.Dst != w.dst || !bound || !s.Encap {
			return nil, nil, fmt.Errorf("%s: SA %s %s %s -> %s, interface %q if_id %d mark %q encap %v; want %s %s -> %s on %s (%s), ESP-in-UDP",
				w.conn, s.SPI, s.Dir, s.Src, s.Dst, s.Interface, s.IfID, s.Mark, s.Encap, w.dir, w.src, w.dst, lab.RouteIf,
				map[lab.HubIKE]string{lab.HubStrongSwan: "if_id 20", lab.HubLibreswan: "no mark, its policies' mark 20"}[hub.IKE])
		}
		if hub.IKE == lab.HubStrongSwan && (s.Conn != w.conn || s.Child != w.conn) {
			return nil, nil, fmt.Errorf("SA %s: charon's names %q/%q, want %s (VICI)", s.SPI, s.Conn, s.Child, w.conn)
		}
		mine[s.SPI] = s
	}
	for _, s := range sas {
		if _, ok := mine[s.SPI]; !ok {
			others = append(others, s)
		}
	}
	return mine, others, nil
}

// hubPlutoRekey has the hub's pluto rekey its CHILD_SA with spoke s:
// `ipsec whack --rekey-ipsec` of the CHILD_SA's state number, as `ipsec
// trafficstatus` shows it (right=%any makes an instance per spoke, which
// whack does not take by the name trafficstatus gives it).
func hubPlutoRekey(ctx context.Context, hub *lab.HubSite, s lab.Spoke) (string, error) {
	ts, err := hub.Pluto.Ipsec(ctx, "trafficstatus")
	if err != nil {
		return ts, err
	}
	m := regexp.MustCompile(`#(\d+): "` + regexp.QuoteMeta(s.HubConn()) + `"`).FindStringSubmatch(ts)
	if m == nil {
		return ts, fmt.Errorf("no CHILD_SA of %s in ipsec trafficstatus", s.HubConn())
	}
	return hub.Pluto.Ipsec(ctx, "whack", "--rekey-ipsec", "--name", m[1])
}

// checkHubKernelSAs: on the libreswan hub, the kernel's copy of each
// outbound SA carries the fast path's counters, written back every
// second, and its oseq is the last sequence number the fast path sent
// (the kernel's ESP sent nothing: its XFRM output error counters stay 0
// too); `ipsec trafficstatus` agrees with `swanpathctl sa` per spoke.
func checkHubKernelSAs(t *testing.T, ctx context.Context, l *lab.Lab, hub *lab.HubSite) {
	t.Helper()
	h := l.Host(lab.Hub)
	err := lab.PollFor(ctx, "the fast path's counters in the hub kernel's outbound SAs", 15*time.Second, 200*time.Millisecond, func() (bool, error) {
		sas, _, err := hubSAs(ctx, hub)
		if err != nil {
			return false, err
		}
		for _, s := range sas {
			if s.Dir != "out" {
				continue
			}
			st, err := h.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", s.Src, "dst", s.Dst, "proto", "esp", "spi", s.SPI,
				"mark", fmt.Sprint(lab.RouteID))
			if err != nil {
				return false, err
			}
			k, err := parseKernelSA(st)
			if err != nil {
				return false, err
			}
			if k.bytes != s.Bytes || k.packets != s.Packets || k.oseq != s.Packets {
				return false, fmt.Errorf("SA %s to %s: kernel %d bytes %d packets oseq %d; fast path %d bytes %d packets",
					s.SPI, s.Dst, k.bytes, k.packets, k.oseq, s.Bytes, s.Packets)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if xs, err := h.Exec(ctx, "cat", "/proc/net/xfrm_stat"); err == nil {
		for _, k := range []string{"XfrmOutStateSeqError", "XfrmOutStateModeError", "XfrmOutNoStates", "XfrmOutPolBlock"} {
			if m := regexp.MustCompile(k + `\s+(\d+)`).FindStringSubmatch(xs); m != nil && m[1] != "0" {
				t.Errorf("the hub kernel's XFRM output %s = %s:\n%s", k, m[1], xs)
			}
		}
	}
	near := func(a, b uint64) bool { return a+2000 >= b && b+2000 >= a }
	var agree []string
	err = lab.PollFor(ctx, "the hub's ipsec trafficstatus agrees with swanpathctl sa", 10*time.Second, 200*time.Millisecond, func() (bool, error) {
		agree = agree[:0]
		ts, err := hub.Pluto.TrafficStatus(ctx)
		if err != nil {
			return false, err
		}
		sas, _, err := hubSAs(ctx, hub)
		if err != nil {
			return false, err
		}
		for _, sp := range lab.Spokes {
			var in, out uint64
			for _, s := range sas {
				switch {
				case s.Dir == "in" && s.Src == sp.WanAddr():
					in = s.Bytes
				case s.Dir == "out" && s.Dst == sp.WanAddr():
					out = s.Bytes
				}
			}
			var x *lab.Traffic
			for i := range ts {
				if ts[i].Conn == sp.HubConn() {
					x = &ts[i]
				}
			}
			if x == nil || !near(x.InBytes, in) || !near(x.OutBytes, out) {
				return false, fmt.Errorf("%s: ipsec trafficstatus %+v, swanpathctl sa in %d out %d bytes", sp.HubConn(), x, in, out)
			}
			agree = append(agree, fmt.Sprintf("%s: trafficstatus in %d out %d, swanpathctl sa in %d out %d bytes", sp.HubConn(), x.InBytes, x.OutBytes, in, out))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(strings.Join(agree, "; "))
}

// hubIfcStats are the hub's ipsec0 counters (swanpathctl stats).
func hubIfcStats(t *testing.T, ctx context.Context, hub *lab.HubSite) map[string]uint64 {
	t.Helper()
	st, err := hub.D.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st[lab.RouteIf] == nil {
		t.Fatalf("swanpathctl stats has no %s: %v", lab.RouteIf, st)
	}
	return st[lab.RouteIf]
}

// checkHubWAN: every IP packet on the hub's WAN is UDP between port 4500
// of the hub and port 4500 of a spoke (ESP-in-UDP, or IKE after the NAT-T
// switch and keep-alives); so no GRE, no plain ESP, no inner address
// (10.x, 240.x) in clear. ARP and IPv6 link-local traffic is not IP
// between the sites and is skipped.
func checkHubWAN(pkts []lab.Packet) (esp, ike int, err error) {
	hub := netip.MustParseAddr(lab.HubWanAddr)
	spokes := map[netip.Addr]bool{}
	for _, s := range lab.Spokes {
		spokes[netip.MustParseAddr(s.WanAddr())] = true
	}
	var bad []string
	for _, p := range pkts {
		if !p.Src.IsValid() || lab.LinkLocal(p) {
			continue
		}
		pair := (p.Src == hub && spokes[p.Dst]) || (spokes[p.Src] && p.Dst == hub)
		switch {
		case pair && p.Proto == 17 && p.SrcPort == 4500 && p.DstPort == 4500 && p.ESPinUDP:
			esp++
		case pair && p.Proto == 17 && p.SrcPort == 4500 && p.DstPort == 4500:
			ike++
		default:
			bad = append(bad, p.String())
		}
	}
	if len(bad) > 0 {
		return esp, ike, fmt.Errorf("%d packets on the hub's WAN that are not UDP 4500 between hub and spokes, first: %s",
			len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
	}
	return esp, ike, nil
}

// iperfBothWays runs iperf3 for seconds from client to the server host
// (at serverAddr), then back (-R), and logs the receivers' rates.
func iperfBothWays(t *testing.T, ctx context.Context, l *lab.Lab, server, serverAddr, client string, seconds int) {
	t.Helper()
	for _, rev := range []bool{false, true} {
		r, err := l.Iperf3(ctx, server, serverAddr, client, seconds, rev)
		if err != nil {
			t.Fatalf("iperf3 (reverse %v): %v", rev, err)
		}
		from, to := client, server
		if rev {
			from, to = to, from
		}
		t.Logf("iperf3 %s -> %s: %.1f Mbit/s, %d bytes received in %.1f s, %d retransmits",
			from, to, r.BitsPerSec/1e6, r.Bytes, r.Seconds, r.Retransmits)
	}
}

// xfrmStatDiff lists the /proc/net/xfrm_stat counters that grew from a to b.
func xfrmStatDiff(a, b string) string {
	before := map[string]string{}
	for _, l := range strings.Split(a, "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			before[f[0]] = f[1]
		}
	}
	var grew []string
	for _, l := range strings.Split(b, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] != before[f[0]] {
			grew = append(grew, fmt.Sprintf("%s %s -> %s", f[0], before[f[0]], f[1]))
		}
	}
	if len(grew) == 0 {
		return "nothing"
	}
	return strings.Join(grew, ", ")
}

// spiTimeline summarises UDP 4500 between the hub and spoke: per
// direction and SPI the first and last ESP frame and how many, every IKE
// message with its time and length, and the times datagrams were lost.
func spiTimeline(pkts []lab.Packet, spoke netip.Addr, lost []time.Time) string {
	type span struct {
		first, last time.Time
		n           int
	}
	var b strings.Builder
	spans := map[string]*span{}
	var keys []string
	for _, p := range pkts {
		dir := "hub->spoke"
		switch {
		case p.Dst == spoke:
		case p.Src == spoke:
			dir = "spoke->hub"
		default:
			continue
		}
		if !p.ESPinUDP {
			fmt.Fprintf(&b, "  %s IKE %s len %d\n", p.Time.Format("15:04:05.000"), dir, p.Len)
			continue
		}
		k := fmt.Sprintf("%s spi 0x%08x", dir, p.SPI)
		sp := spans[k]
		if sp == nil {
			sp = &span{first: p.Time}
			spans[k] = sp
			keys = append(keys, k)
		}
		sp.last = p.Time
		sp.n++
	}
	for _, k := range keys {
		sp := spans[k]
		fmt.Fprintf(&b, "  %s: %d frames %s .. %s\n", k, sp.n, sp.first.Format("15:04:05.000"), sp.last.Format("15:04:05.000"))
	}
	for _, at := range lost {
		fmt.Fprintf(&b, "  %s lost (sent)\n", at.Format("15:04:05.000"))
	}
	return b.String()
}
