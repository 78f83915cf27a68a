package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
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

// TestGatewayFragmentFlood: issue 17, hostile fragments. While two paced
// streams cross the tunnel (IPv4 and IPv6 inside) — 3,000-byte IPv6
// datagrams (h1's kernel fragments them; the fast path reassembles each in
// the same table the flood fills, encrypts it and sends the ESP packet in
// fragments) and small IPv4 datagrams — h1's LAN link carries a flood of IPv6
// fragments that never complete (first pieces, random identifications,
// about 5,000 a second against a table of 128 datagrams that the library
// would only empty after 2 s). Both streams arrive (99% or more, intact,
// none twice); the IPv6 datagrams were reassembled by the fast path; the
// flood is dropped and counted by reason (frag_evicted under pressure,
// frag_timeout for the rest), each fragment once, on the LAN port.
func TestGatewayFragmentFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g := start(t, ctx, lab.Options{IPv6: true}, lab.Tunnel{Encap: true, Inner: lab.FamilyDual})
	// the far LAN takes the IPv6 datagrams whole: the peer's kernel
	// forwards what kernel-libipsec decrypted and, IPv6, never fragments
	for _, e := range []struct{ role, iface string }{{lab.PR, lab.PRLan}, {lab.H2, lab.HostIf}} {
		if _, err := g.l.Host(e.role).Exec(ctx, "ip", "link", "set", e.iface, "mtu", "9000"); err != nil {
			t.Fatal(err)
		}
	}
	// neighbours resolved both ways before the streams
	for _, to := range []string{lab.H2Addr6, lab.H2Addr} {
		if err := g.l.Ping(ctx, lab.H1, to, 2); err != nil {
			t.Fatal(err)
		}
	}
	mac := func(role, iface string) net.HardwareAddr {
		out, err := g.l.Host(role).Exec(ctx, "cat", "/sys/class/net/"+iface+"/address")
		if err != nil {
			t.Fatal(err)
		}
		m, err := net.ParseMAC(strings.TrimSpace(out))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	gwMAC, h1MAC := mac(lab.GW, lab.GWLan), mac(lab.H1, lab.HostIf)
	// a destination of its own, so that no flood fragment can share a
	// datagram's identity with the stream's
	src, dst := netip.MustParseAddr(lab.H1Addr6), netip.MustParseAddr("fd00:2::99")

	before, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const dur = 4 * time.Second
	big, err := g.l.StartUDPSeq(ctx, lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr6, Port: 7017,
		Rate: 50, Duration: dur, Size: 3000})
	if err != nil {
		t.Fatal(err)
	}
	small, err := g.l.StartUDPSeq(ctx, lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7018,
		Rate: 200, Duration: dur, Size: 200})
	if err != nil {
		t.Fatal(err)
	}
	// the flood, 100 fragments every 20 ms while the streams run
	flood := 0
	var id [4]byte
	for end := time.Now().Add(dur); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		frames := make([][]byte, 100)
		for i := range frames {
			_, _ = rand.Read(id[:])
			frames[i] = floodFragment(gwMAC, h1MAC, src, dst, binary.BigEndian.Uint32(id[:]))
		}
		if err := g.l.SendFrames(lab.H1, lab.HostIf, frames); err != nil {
			t.Fatal(err)
		}
		flood += len(frames)
	}
	resBig, err := big.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resSmall, err := small.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		r    lab.SeqResult
	}{{"3,000-byte IPv6 datagrams", resBig}, {"small IPv4 datagrams", resSmall}} {
		if c.r.Received*100 < c.r.Sent*99 || c.r.Corrupt != 0 || c.r.Unexpected != 0 || c.r.Duplicates != 0 {
			t.Errorf("%s during the flood: %s", c.name, c.r)
		}
	}

	// every flood fragment counted once, by reason, once what was held
	// has timed out (nothing counted for longer than the 2 s timeout);
	// a loaded machine may lose a few of the flood before the fast path
	// sees them
	reasons := []string{"frag_bad", "frag_oversize", "frag_overlap", "frag_too_many", "frag_timeout", "frag_evicted",
		"frag_table_full"}
	var after map[string]map[string]uint64
	var last uint64
	lastChange := time.Now()
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	err = lab.Poll(pctx, "the flood counted", 100*time.Millisecond, func() (bool, error) {
		if after, err = g.d.Stats(ctx); err != nil {
			return false, err
		}
		var sum uint64
		for _, r := range reasons {
			sum += after["lan"][r] - before["lan"][r]
		}
		n := after["lan"]["drop_frag"] - before["lan"]["drop_frag"]
		if n != last {
			last, lastChange = n, time.Now()
		}
		return sum == n && time.Since(lastChange) > 3*time.Second,
			fmt.Errorf("drop_frag +%d, by reason +%d, flood %d", n, sum, flood)
	})
	if err != nil {
		t.Fatal(err)
	}
	delta := func(c string) uint64 { return after["lan"][c] - before["lan"][c] }
	if n := delta("drop_frag"); n > uint64(flood) || n*100 < uint64(flood)*95 {
		t.Errorf("flood of %d fragments: drop_frag on lan +%d", flood, n)
	}
	if delta("frag_in") < uint64(resBig.Received) {
		t.Errorf("frag_in on lan +%d: not every IPv6 datagram that arrived was reassembled by the fast path (%d)",
			delta("frag_in"), resBig.Received)
	}
	if delta("frag_evicted") == 0 {
		t.Errorf("flood of %d fragments against a table of 128: none evicted early", flood)
	}
	t.Logf("flood of %d fragments: evicted %d, timed out %d, table full %d; IPv6 %d/%d, IPv4 %d/%d; frag_in +%d",
		flood, delta("frag_evicted"), delta("frag_timeout"), delta("frag_table_full"),
		resBig.Received, resBig.Sent, resSmall.Received, resSmall.Sent, delta("frag_in"))
}

// floodFragment is the first piece of an IPv6 UDP datagram from src to
// dst that says more follow, in a frame to the gateway's LAN port.
func floodFragment(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, id uint32) []byte {
	f := make([]byte, 14+48+64)
	copy(f[0:], dstMAC)
	copy(f[6:], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 8+64)
	ip[6], ip[7] = 44, 64
	copy(ip[8:], src.AsSlice())
	copy(ip[24:], dst.AsSlice())
	ip[40] = 17
	binary.BigEndian.PutUint16(ip[42:], 1) // offset 0, more
	binary.BigEndian.PutUint32(ip[44:], id)
	return f
}
