package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// TestGatewayFragments: issue 18, point 2, as a user found it. A LAN host
// sends five 4,000-byte UDP datagrams to the far LAN (its kernel
// fragments them for the 1500-byte link): all five arrive intact through
// the tunnel to the kernel-libipsec peer, and the WAN carries none of
// them in clear, only fragments of ESP-in-UDP.
func TestGatewayFragments(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g := bringUp(t, ctx, "aes128gcm16")
	wan, err := g.l.CaptureSnap(lab.PR, lab.PRWan, "", 65535)
	if err != nil {
		t.Fatal(err)
	}
	before, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := g.l.StartUDPSeq(ctx, lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7018,
		Rate: 5, Duration: time.Second, Size: 4000})
	if err != nil {
		t.Fatal(err)
	}
	res, err := seq.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := wan.Stop()
	if err != nil {
		t.Fatal(err)
	}
	after, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Exact() || res.Sent != 5 {
		t.Fatalf("4,000-byte datagrams through the tunnel: %s (gateway counters before %v after %v)", res, before, after)
	}

	// what crossed the WAN: no LAN address, no stretch of the datagrams'
	// payload (udpseq fills byte i of datagram n with n+i), and the ESP
	// in fragments (a 4,028-byte packet does not fit 1500 once encrypted)
	lanHosts := map[netip.Addr]bool{netip.MustParseAddr(lab.H1Addr): true, netip.MustParseAddr(lab.H2Addr): true}
	fragments := 0
	for _, p := range pkts {
		if lanHosts[p.Src] || lanHosts[p.Dst] {
			t.Fatalf("plaintext of the protected flow on the WAN: %s", p)
		}
		for n := range 5 {
			clear := make([]byte, 32)
			for i := range clear {
				clear[i] = byte(n) + byte(1000+i)
			}
			if bytes.Contains(p.Data, clear) {
				t.Fatalf("datagram %d in clear on the WAN: %s", n, p)
			}
		}
		if p.EtherTyp == 0x0800 && len(p.Data) >= 34 && p.Src == netip.MustParseAddr(lab.GWWanAddr) {
			if binary.BigEndian.Uint16(p.Data[14+6:])&0x3fff != 0 {
				fragments++
			}
		}
	}
	if fragments < 5*3 {
		t.Fatalf("%d IPv4 fragments from the gateway on the WAN, want at least 15 (3 per datagram)", fragments)
	}
	t.Logf("5 of 5 datagrams intact; %d fragments of ESP on the WAN; gateway frag_out %d -> %d", fragments,
		before["wan"]["frag_out"], after["wan"]["frag_out"])
}
