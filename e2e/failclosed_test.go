package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// TestGatewayFailClosedAcrossRestarts: a protected UDP stream (2,000
// datagrams/s, LAN host to far LAN) runs while swanpathd is stopped and
// started, then killed (SIGKILL) and started, on a gateway whose kernel has
// a default route out of the WAN. Not one datagram of the flow crosses the
// WAN in clear (a capture at the peer's end of the link), each new
// swanpathd dropped the flow as drop_closed until charon's plugin had
// replayed, and the stream flows through the tunnel again afterwards. The
// peer never sees a sequence number twice (an AES-GCM IV reused), also
// when the crash comes within the first second after the clean restart.
func TestGatewayFailClosedAcrossRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	g := start(t, ctx, lab.Options{}, lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true})
	warmUp(t, ctx, g)

	// everything with a LAN address on the WAN link is plaintext that
	// should have been in the tunnel
	capture, err := g.l.Capture(lab.PR, lab.PRWan, "ip and (net 10.1.0.0/24 or net 10.2.0.0/24)")
	if err != nil {
		t.Fatal(err)
	}
	// the gateway's ESP as it reaches the peer: each sequence number of
	// an SA at most once on the wire
	espCapture, err := g.l.Capture(lab.PR, lab.PRWan, "udp and src host "+lab.GWWanAddr+" and dst port 4500")
	if err != nil {
		t.Fatal(err)
	}
	stream, err := g.l.StartUDPSeq(ctx, lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7778,
		Rate: 2000, Duration: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	delivered := func(what string) {
		t.Helper()
		// the stream goes through the tunnel: the gateway's outbound SA
		// counts 100 more packets
		var first uint64
		err := waitFor(ctx, what, func() (bool, error) {
			sas, err := g.d.SAs(ctx)
			if err != nil {
				return false, err
			}
			out, ok := saByDir(sas, "out")
			if !ok {
				return false, fmt.Errorf("no outbound SA: %+v", sas)
			}
			if first == 0 {
				first = out.Packets + 1
				return false, nil
			}
			return out.Packets >= first+100, fmt.Errorf("outbound SA at %d packets", out.Packets)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	closedDrops := func(what string) {
		t.Helper()
		st, err := g.d.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range st {
			n += c["drop_closed"]
		}
		t.Logf("%s: drop_closed %d", what, n)
		if n == 0 {
			t.Errorf("%s: nothing was dropped while closed: the flow did not reach the gateway before the replay, the test shows nothing", what)
		}
	}
	delivered("stream through the tunnel")

	if err := g.d.Stop(); err != nil {
		t.Logf("swanpathd stop: %v", err)
	}
	if err := g.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	delivered("stream through the tunnel after a restart")
	closedDrops("after the restart")

	if err := g.d.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	delivered("stream through the tunnel after a crash")
	closedDrops("after the crash")

	res, err := stream.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream: %s", res)
	pkts, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	h2 := netip.MustParseAddr(lab.H2Addr)
	var leaked []lab.Packet
	for _, p := range pkts {
		if p.Dst == h2 && p.DstPort == 7778 {
			leaked = append(leaked, p)
		}
	}
	if len(leaked) != 0 {
		t.Errorf("%d datagrams of the protected flow crossed the WAN in clear, e.g. %s", len(leaked), leaked[0])
	}
	if len(pkts) != 0 {
		t.Errorf("%d packets with LAN addresses on the WAN, e.g. %s", len(pkts), pkts[0])
	}
	esp, err := espCapture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	wireDups, sample := espSeqDups(esp)
	if wireDups != 0 {
		t.Errorf("%d ESP sequence numbers (GCM IVs) on the wire twice, e.g. %s", wireDups, sample)
	}
	if n := strings.Count(g.pr.Log(), "ESP sequence number verification failed"); n != 0 {
		// not necessarily a number sent twice (that is the check above):
		// also ESP that comes too far behind a higher number, which the
		// replay window cannot take
		t.Errorf("the peer dropped %d ESP packets as replays or below its replay window (the wire carried %d of %d ESP packets' sequence numbers twice; %s)",
			n, wireDups, len(esp), espReorder(esp))
	}
	if res.Received == 0 || res.Received >= res.Sent {
		t.Errorf("stream: %d of %d arrived; want most of them, but not those sent while swanpathd was down or closed", res.Received, res.Sent)
	}
	g.pingBothWays(t, ctx, 3)
}

// espSeqDups counts the (SPI, sequence number) pairs of ESP-in-UDP
// frames captured more than once, with one of them as an example.
func espSeqDups(pkts []lab.Packet) (int, string) {
	type key struct{ spi, seq uint32 }
	seen := map[key]int{}
	dups, sample := 0, ""
	for _, p := range pkts {
		d := p.Data
		if !p.ESPinUDP || len(d) < 14+20 {
			continue
		}
		off := 14 + int(d[14]&0xf)*4 + 8 // Ethernet, IPv4, UDP
		if len(d) < off+8 {
			continue
		}
		k := key{binary.BigEndian.Uint32(d[off:]), binary.BigEndian.Uint32(d[off+4:])}
		if seen[k]++; seen[k] == 2 {
			dups++
			if sample == "" {
				sample = fmt.Sprintf("spi 0x%08x seq %d at %s", k.spi, k.seq, p.Time.Format("15:04:05.000"))
			}
		}
	}
	return dups, sample
}

// espReorder says how far out of order the ESP-in-UDP frames came: the
// most sequence numbers of an SA seen above one before it arrived.
func espReorder(pkts []lab.Packet) string {
	high := map[uint32]uint32{}
	worst, at := uint32(0), ""
	for _, p := range pkts {
		d := p.Data
		if !p.ESPinUDP || len(d) < 14+20 {
			continue
		}
		off := 14 + int(d[14]&0xf)*4 + 8
		if len(d) < off+8 {
			continue
		}
		spi, seq := binary.BigEndian.Uint32(d[off:]), binary.BigEndian.Uint32(d[off+4:])
		if h := high[spi]; seq < h {
			if h-seq > worst {
				worst, at = h-seq, fmt.Sprintf("spi 0x%08x seq %d after %d at %s", spi, seq, h, p.Time.Format("15:04:05.000"))
			}
		} else {
			high[spi] = seq
		}
	}
	if worst == 0 {
		return "all in order"
	}
	return fmt.Sprintf("out of order by up to %d: %s", worst, at)
}
