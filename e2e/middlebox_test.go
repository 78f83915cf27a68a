package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/swanpath/swanpath/internal/swanpathdconf"
	"github.com/swanpath/swanpath/lab"
)

// TestMiddleboxFragmentsAllowed: issue 17, point 3, a path whose MTU is
// below the encrypted packet and fragments allowed. A router in the middle
// of the WAN has a 1400-byte link to the peer; the LAN hosts send
// 1500-byte UDP datagrams with DF clear (ip_no_pmtu_disc). Every datagram
// arrives intact both ways: out, the gateway fragments the ESP packet
// (frag_out) and the middlebox fragments its first fragment again; in, the
// peer (Linux's ESP in a kernel host) encrypts the whole datagram and its
// kernel fragments the ESP-in-UDP packet for the 1400-byte link; the
// gateway reassembles it before decryption (frag_in on the WAN port).
func TestMiddleboxFragmentsAllowed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// the peer is Linux's own ESP (kernel-libipsec reads its TUN device
	// in 1400-byte chunks: what it encrypts always fits); the gateway's
	// WAN port is net_pcap, whose fragments the kernel does not
	// reassemble first (see lab.Options.GatewayWANPcap)
	g := start(t, ctx, lab.Options{KernelPeer: true, GatewayWANPcap: true, Middlebox: &lab.MiddleboxOptions{FarMTU: 1400}},
		lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true})
	for _, h := range []string{lab.H1, lab.H2} {
		if err := g.l.Host(h).Sysctl(ctx, "net.ipv4.ip_no_pmtu_disc", "1"); err != nil {
			t.Fatal(err)
		}
	}
	before, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mb0, err := g.l.MiddleboxCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 1,472 bytes of UDP payload: 1,500-byte IP packets, the LANs' MTU
	// one way after the other: the lab's two cores are shared
	var res []lab.SeqResult
	for _, o := range []lab.SeqOptions{
		{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7201, Rate: 50, Duration: 2 * time.Second, Size: 1472},
		{From: lab.H2, To: lab.H1, ToAddr: lab.H1Addr, Port: 7202, Rate: 50, Duration: 2 * time.Second, Size: 1472},
	} {
		s, err := g.l.StartUDPSeq(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, r)
	}
	after, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mb1, err := g.l.MiddleboxCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, dir := range []string{"h1 -> h2", "h2 -> h1"} {
		if !res[i].Exact() {
			t.Errorf("%s: %s", dir, res[i])
		}
	}
	if t.Failed() {
		for _, c := range []struct{ role, ifc string }{{lab.GW, lab.GWWan}, {lab.MB, "near"}} {
			out, _ := g.l.Host(c.role).Exec(ctx, "ip", "-s", "link", "show", c.ifc)
			t.Logf("%s %s: %s", c.role, c.ifc, out)
		}
		t.Fatalf("gateway counters before %v\nafter %v\nmiddlebox before: %s\nafter: %s", before, after, mb0, mb1)
	}
	fragOut := after[lab.GWWan]["frag_out"] - before[lab.GWWan]["frag_out"]
	fragIn := after[lab.GWWan]["frag_in"] - before[lab.GWWan]["frag_in"]
	d := mb1.Sub(mb0)
	near, far := d.FragsNear, d.FragsFar
	t.Logf("100 + 100 datagrams of 1,500 bytes intact; gateway: %d ESP fragments sent, %d ESP packets reassembled; middlebox: %d fragments from the gateway, %d from the peer",
		fragOut, fragIn, near, far)
	// each datagram's ESP leaves in two fragments; each of the peer's
	// arrives in two and is reassembled once
	if fragOut < 200 || near < 200 {
		t.Errorf("out: gateway frag_out +%d, middlebox saw +%d fragments from it: want 200 or more each", fragOut, near)
	}
	if fragIn < 100 || far < 200 {
		t.Errorf("in: gateway frag_in on the WAN +%d (want 100 or more), middlebox saw +%d fragments from the peer (want 200 or more)", fragIn, far)
	}
}

// TestMiddleboxDropsFragmentsMSSClamp: issue 17, point 3, the seed's ADSL
// path. The middlebox drops 30% of the IP fragments it forwards and its
// link to the peer has an MTU of 1400; the LAN host sends TCP with DF clear
// (ip_no_pmtu_disc, as the seed's GRE did) through a route-based interface
// of MTU 1500 (a VTI's). With mss_clamp = 1280 on the interface the
// segments, once encrypted, fit the path: no fragment leaves the gateway,
// the middlebox drops nothing. Without it every full-size segment leaves
// in fragments and a share is lost: fragments and drops are counted and
// iperf3's sender retransmits more than with the clamp. The rates and
// retransmits of both are logged (never asserted: speed is for benchmarks).
func TestMiddleboxDropsFragmentsMSSClamp(t *testing.T) {
	type outcome struct {
		res     lab.IperfResult
		fragOut uint64
		mb      lab.MiddleboxCounts
	}
	// the share of what the sender sent that it sent again (segments of
	// at most mss bytes)
	resent := func(o outcome, mss float64) float64 {
		return float64(o.res.Retransmits) * mss / float64(max(o.res.SentBytes, 1))
	}
	run := func(t *testing.T, clamp any) outcome {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		ifc := swanpathdconf.Interface{Name: "ipsec0", IfID: 20, MTU: 1500, MSSClamp: clamp}
		g := start(t, ctx, lab.Options{GatewayInterfaces: []swanpathdconf.Interface{ifc},
			Middlebox: &lab.MiddleboxOptions{FarMTU: 1400, DropFrags: 30}},
			lab.Tunnel{Encap: true, GatewayLocalTS: "0.0.0.0/0", GatewayRemoteTS: "0.0.0.0/0",
				GatewayChildOptions: []string{"if_id_in = 20", "if_id_out = 20"}})
		gw := g.l.Host(lab.GW)
		if out, err := gw.Exec(ctx, "sh", "-c", "ip link set ipsec0 up && ip route replace "+lab.RightNet+" dev ipsec0"); err != nil {
			t.Fatalf("gw: route into ipsec0: %v: %s", err, out)
		}
		if err := g.l.Host(lab.H1).Sysctl(ctx, "net.ipv4.ip_no_pmtu_disc", "1"); err != nil {
			t.Fatal(err)
		}
		g.pingBothWays(t, ctx, 2)
		st0, err := g.d.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mb0, err := g.l.MiddleboxCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// paced at 20 Mbit/s: what the lab's veths and two cores carry
		// without losing on their own, so that loss is the path's
		res, err := g.l.Iperf3(ctx, lab.H2, lab.H2Addr, lab.H1, 8, false, "-b", "20M")
		if err != nil {
			t.Fatal(err)
		}
		st1, err := g.d.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mb1, err := g.l.MiddleboxCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		o := outcome{res: res, fragOut: st1[lab.GWWan]["frag_out"] - st0[lab.GWWan]["frag_out"],
			mb: mb1.Sub(mb0)}
		t.Logf("mss_clamp %v: iperf3 h1 -> h2 %.2f Mbit/s received, %d bytes, %d retransmits; gateway sent %d ESP fragments; middlebox: %s",
			clamp, res.BitsPerSec/1e6, res.Bytes, res.Retransmits, o.fragOut, o.mb)
		return o
	}
	var with, without outcome
	t.Run("clamp 1280", func(t *testing.T) {
		with = run(t, 1280)
		if with.fragOut != 0 || with.mb.FragsNear != 0 || with.mb.Dropped != 0 {
			t.Errorf("with the clamp: %d fragments sent by the gateway, middlebox %s: want none", with.fragOut, with.mb)
		}
	})
	t.Run("no clamp", func(t *testing.T) {
		without = run(t, nil)
		if without.fragOut == 0 || without.mb.FragsNear == 0 || without.mb.Dropped == 0 || without.res.Retransmits == 0 {
			t.Errorf("without the clamp: %d fragments sent by the gateway, %d retransmits, middlebox %s: want fragments, drops and retransmits",
				without.fragOut, without.res.Retransmits, without.mb)
		}
	})
	if t.Failed() {
		return
	}
	rw, rwo := resent(with, 1280), resent(without, 1460)
	t.Logf("with the clamp %.2f Mbit/s, %d retransmits (%.2f%% of what was sent); without %.2f Mbit/s, %d retransmits (%.1f%%), %d of %d fragments dropped",
		with.res.BitsPerSec/1e6, with.res.Retransmits, 100*rw, without.res.BitsPerSec/1e6, without.res.Retransmits, 100*rwo,
		without.mb.Dropped, without.mb.FragsNear+without.mb.FragsFar)
	if rw >= rwo {
		t.Errorf("retransmitted with the clamp %.2f%% of what was sent, without %.2f%%: want less with it", 100*rw, 100*rwo)
	}
}
