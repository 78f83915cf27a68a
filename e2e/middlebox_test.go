package e2e

import (
	"context"
	"testing"
	"time"

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
	var seqs []*lab.UDPSeq
	for _, o := range []lab.SeqOptions{
		{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7201, Rate: 50, Duration: 2 * time.Second, Size: 1472},
		{From: lab.H2, To: lab.H1, ToAddr: lab.H1Addr, Port: 7202, Rate: 50, Duration: 2 * time.Second, Size: 1472},
	} {
		s, err := g.l.StartUDPSeq(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s)
	}
	var res []lab.SeqResult
	for _, s := range seqs {
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
		t.Fatalf("gateway counters before %v\nafter %v\nmiddlebox before: %s\nafter: %s", before, after, mb0, mb1)
	}
	fragOut := after[lab.GWWan]["frag_out"] - before[lab.GWWan]["frag_out"]
	fragIn := after[lab.GWWan]["frag_in"] - before[lab.GWWan]["frag_in"]
	near, far := mb1.FragsNear-mb0.FragsNear, mb1.FragsFar-mb0.FragsFar
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
