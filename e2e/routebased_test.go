package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/swanpath/swanpath/internal/swanpathdconf"
	"github.com/swanpath/swanpath/lab"
)

// TestRouteBasedIfID: a route-based CHILD_SA (if_id_in/if_id_out = 20,
// 0.0.0.0/0 selectors on the gateway; the kernel-libipsec peer is
// policy-based and IKE narrows to its subnets) carries what the gateway's
// kernel routes into swanpathd's interface ipsec0, and what it decrypts
// comes out of ipsec0: ping and paced UDP both ways, only ESP on the WAN,
// the counters in swanctl --list-sas. Without the kernel route the same
// traffic does not touch the SA although its selectors match: it is
// route-based, not selector-based.
func TestRouteBasedIfID(t *testing.T) {
	routeBased(t, swanpathdconf.Interface{Name: "ipsec0", IfID: 20, MTU: 1400}, "if_id_in = 20", "if_id_out = 20")
}

// routeBased runs the route-based tunnel test with the gateway's
// interface ifc (named ipsec0, MTU 1400) and the CHILD_SA options that tie
// the SAs to it.
func routeBased(t *testing.T, iface swanpathdconf.Interface, childOpts ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	ifc := iface.Name
	g := start(t, ctx, lab.Options{GatewayInterfaces: []swanpathdconf.Interface{iface}},
		lab.Tunnel{Encap: true, GatewayLocalTS: "0.0.0.0/0", GatewayRemoteTS: "0.0.0.0/0",
			GatewayChildOptions: childOpts})
	gw := g.l.Host(lab.GW)
	sh := func(cmd string) {
		t.Helper()
		if out, err := gw.Exec(ctx, "sh", "-c", cmd); err != nil {
			t.Fatalf("gw: %s: %v: %s", cmd, err, out)
		}
	}
	// the interface as the kernel sees it: point-to-point, no ARP, MTU 1400
	link, err := gw.Exec(ctx, "ip", "-d", "link", "show", ifc)
	if err != nil {
		t.Fatalf("gw has no %s: %v", ifc, err)
	}
	if err := contains(link, "POINTOPOINT", "NOARP", "mtu 1400"); err != nil {
		t.Fatal(err)
	}
	sh("ip link set " + ifc + " up && ip route replace " + lab.RightNet + " dev " + ifc)

	outSA := func() uint64 {
		t.Helper()
		sas, err := g.d.SAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out, ok := saByDir(sas, "out")
		if !ok {
			t.Fatalf("no outbound SA: %+v", sas)
		}
		return out.Packets
	}
	ifcStats := func() map[string]uint64 {
		t.Helper()
		st, err := g.d.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st[ifc] == nil {
			t.Fatalf("swanpathctl stats has no %s: %v", ifc, st)
		}
		return st[ifc]
	}

	lanHosts := map[netip.Addr]bool{netip.MustParseAddr(lab.H1Addr): true, netip.MustParseAddr(lab.H2Addr): true}
	capture, err := g.l.Capture(lab.PR, lab.PRWan, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("ping and UDP through the interface", func(t *testing.T) {
		g.pingBothWays(t, ctx, 5)
		g.l.RunUDPSeqs(ctx, t,
			lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7101, Rate: 200, Duration: 2 * time.Second, Size: 200},
			lab.SeqOptions{From: lab.H2, To: lab.H1, ToAddr: lab.H1Addr, Port: 7102, Rate: 200, Duration: 2 * time.Second, Size: 200})
		s := ifcStats()
		// 5 pings and 400 datagrams each way at least
		if s["tap_rx"] < 405 || s["tap_tx"] < 405 {
			t.Fatalf("%s carried too little: %v", ifc, s)
		}
	})
	pkts, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("WAN carries only ESP", func(t *testing.T) {
		esp := 0
		for _, p := range pkts {
			if lanHosts[p.Src] || lanHosts[p.Dst] {
				t.Fatalf("plaintext of the LANs on the WAN: %s", p)
			}
			if p.ESPinUDP {
				esp++
			}
		}
		if esp < 810 {
			t.Fatalf("%d ESP-in-UDP packets on the WAN, want at least 810", esp)
		}
	})
	t.Run("swanctl --list-sas shows the counters", func(t *testing.T) {
		ikes, err := g.gw.ListSAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, c, ok := lab.Child(ikes, lab.ChildName)
		if !ok || c.PacketsIn < 405 || c.PacketsOut < 405 || c.BytesIn == 0 || c.BytesOut == 0 {
			t.Fatalf("gateway CHILD_SA counters: %+v", c)
		}
		t.Logf("gateway CHILD_SA %s <-> %s: in %d pkts / %d B, out %d pkts / %d B",
			c.LocalTS, c.RemoteTS, c.PacketsIn, c.BytesIn, c.PacketsOut, c.BytesOut)
	})

	t.Run("without the route the SA carries nothing", func(t *testing.T) {
		sh("ip route del " + lab.RightNet + " dev " + ifc)
		// (the interface's own counters are no measure: the kernel sends
		// its IPv6 link-local chatter into it whatever the routes say)
		out0 := outSA()
		wan, err := g.l.Capture(lab.PR, lab.PRWan, "icmp")
		if err != nil {
			t.Fatal(err)
		}
		// the kernel now sends h1's packets for h2 its default way (out
		// of the WAN, in clear: as Linux does once no route leads into
		// the XFRM interface); whether they are answered is no matter
		_ = g.l.Ping(ctx, lab.H1, lab.H2Addr, 3)
		clear, err := wan.Stop()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range clear {
			if p.Src == netip.MustParseAddr(lab.H1Addr) && p.Dst == netip.MustParseAddr(lab.H2Addr) {
				n++
			}
		}
		if n < 3 {
			t.Fatalf("%d echo requests h1 -> h2 left by the kernel's default route, want 3", n)
		}
		if out1 := outSA(); out1 != out0 {
			t.Fatalf("without the route: outbound SA %d -> %d packets: want no change", out0, out1)
		}
		// and back: the route alone brings the tunnel back
		sh("ip route replace " + lab.RightNet + " dev " + ifc)
		err = waitFor(ctx, "traffic through "+ifc+" again", func() (bool, error) {
			err := g.l.Ping(ctx, lab.H1, lab.H2Addr, 1)
			return err == nil && outSA() > out0, fmt.Errorf("ping: %v", err)
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
