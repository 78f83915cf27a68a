package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// TestGatewayReplayWAN: valid ESP-in-UDP frames captured as they arrived
// at the gateway's WAN port, sent again byte for byte from the peer's side
// of the link, are all dropped as replays (drop_replay on the port and on
// the SA) and none is decrypted again; traffic goes on afterwards.
func TestGatewayReplayWAN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, inSA, _, frames := startCaptured(t, ctx)
	replayFrames(t, ctx, g, frames, inSA, "")
	g.pingBothWays(t, ctx, 3)
}

// TestGatewayReplayAfterRestart: the peer's ESP frames captured before a
// clean restart of swanpathd, sent again after charon's plugin replayed
// the SAs, are all dropped as replays: the inbound SA's replay window
// starts above the highest number it received before the restart (kept
// in fastpath.state_file), not empty.
func TestGatewayReplayAfterRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g, inSA, spi, frames := startCaptured(t, ctx)

	if err := g.d.Stop(); err != nil {
		t.Logf("swanpathd stop: %v", err)
	}
	if err := g.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	err := waitFor(ctx, "plugin replay", func() (bool, error) {
		sas, err := g.d.SAs(ctx)
		return err == nil && len(sas) == 2, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if spi2, _, _ := inSA(); spi2 != spi {
		t.Fatalf("inbound SA 0x%08x after the restart, want the same 0x%08x (replayed, not renegotiated)", spi2, spi)
	}
	replayFrames(t, ctx, g, frames, inSA, "after the restart: ")
	g.pingBothWays(t, ctx, 3)
}

// startCaptured starts the lab with an AES-GCM tunnel in UDP and captures
// frames of its inbound SA (captureFromPeer); inSA reads that SA's SPI,
// packets and replay drops.
func startCaptured(t *testing.T, ctx context.Context) (g *gateway, inSA func() (uint32, uint64, uint64), spi uint32, frames [][]byte) {
	t.Helper()
	g = start(t, ctx, lab.Options{}, lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true})
	warmUp(t, ctx, g)
	inSA = inboundSA(t, ctx, g)
	spi, pkts0, _ := inSA()
	frames = captureFromPeer(t, ctx, g, spi, func() uint64 { _, p, _ := inSA(); return p - pkts0 })
	return g, inSA, spi, frames
}

// replayFrames sends frames again from the peer's side of the WAN link
// and checks that every one is dropped as a replay, on the port and on
// the inbound SA (inSA: its SPI, packets and drop_replay), and none is
// decrypted and forwarded. when says when, in the messages.
func replayFrames(t *testing.T, ctx context.Context, g *gateway, frames [][]byte, inSA func() (uint32, uint64, uint64), when string) {
	t.Helper()
	before, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, pkts1, saReplay0 := inSA()
	if err := g.l.SendFrames(lab.PR, lab.PRWan, frames); err != nil {
		t.Fatal(err)
	}
	n := uint64(len(frames))
	// every replayed frame is handled one way or the other: dropped as a
	// replay, or (wrongly) decrypted
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	err = waitFor(wctx, "replayed frames handled", func() (bool, error) {
		now, err := g.d.Stats(wctx)
		if err != nil {
			return false, err
		}
		d := func(k string) uint64 { return now["wan"][k] - before["wan"][k] }
		return d("drop_replay")+d("esp_in") >= n, fmt.Errorf("drop_replay +%d, esp_in +%d of %d", d("drop_replay"), d("esp_in"), n)
	})
	if err != nil {
		t.Error(err)
	}
	now, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, pkts2, saReplay := inSA()
	delta := func(k string) uint64 { return now["wan"][k] - before["wan"][k] }
	t.Logf("%sreplayed %d frames: wan rx +%d, drop_replay +%d, esp_in +%d", when, n, delta("rx"), delta("drop_replay"), delta("esp_in"))
	if delta("rx") < n {
		t.Errorf("%sthe gateway's WAN port received %d frames, %d were replayed", when, delta("rx"), n)
	}
	if delta("drop_replay") != n {
		t.Errorf("%sdrop_replay rose by %d, want exactly %d (the replayed frames)", when, delta("drop_replay"), n)
	}
	if delta("esp_in") != 0 {
		t.Errorf("%sesp_in rose by %d: replayed ESP was decrypted and forwarded", when, delta("esp_in"))
	}
	if saReplay-saReplay0 != n || pkts2 != pkts1 {
		t.Errorf("%sinbound SA: drop_replay +%d (want %d), packets +%d (want 0)", when, saReplay-saReplay0, n, pkts2-pkts1)
	}
}

// captureFromPeer captures the ESP-in-UDP frames of the inbound SA spi as
// they arrive at the gateway's WAN port while 5 pings go each way, and
// returns them whole. decrypted is how many packets the SA has decrypted
// since before the capture: each captured frame must have been accepted
// once (or its copy would be no replay).
func captureFromPeer(t *testing.T, ctx context.Context, g *gateway, spi uint32, decrypted func() uint64) [][]byte {
	t.Helper()
	capture, err := g.l.CaptureSnap(lab.GW, lab.GWWan,
		fmt.Sprintf("udp and src host %s and dst host %s and port 4500", lab.PRWanAddr, lab.GWWanAddr), 65535)
	if err != nil {
		t.Fatal(err)
	}
	g.pingBothWays(t, ctx, 5)
	n1 := decrypted()
	src, dst := netip.MustParseAddr(lab.PRWanAddr), netip.MustParseAddr(lab.GWWanAddr)
	espOfSA := func(pkts []lab.Packet) [][]byte {
		var frames [][]byte
		for _, p := range pkts {
			if p.ESPinUDP && p.SPI == spi && p.Src == src && p.Dst == dst && len(p.Data) == p.Len {
				frames = append(frames, p.Data)
			}
		}
		return frames
	}
	// tcpdump (libpcap's TPACKET_V3 ring) hands packets over in blocks,
	// at the latest after its 1-s buffer timeout, and loses the block in
	// hand when it is stopped: wait until the file holds what the SA saw.
	cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
	defer ccancel()
	err = waitFor(cctx, "capture written", func() (bool, error) {
		pkts, err := lab.ReadPcap(capture.Path)
		if err != nil {
			return false, err
		}
		n := len(espOfSA(pkts))
		return uint64(n) >= n1, fmt.Errorf("%d ESP frames in the capture", n)
	})
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	frames := espOfSA(pkts)
	t.Logf("captured %d frames at the gateway's WAN port, %d of them ESP-in-UDP for SA 0x%08x; the SA decrypted %d meanwhile",
		len(pkts), len(frames), spi, n1)
	// 5 pings each way: 10 ESP packets from the peer
	if len(frames) < 10 || uint64(len(frames)) != n1 {
		t.Fatalf("captured %d ESP frames for SA 0x%08x, but the SA decrypted %d packets meanwhile", len(frames), spi, n1)
	}
	return frames
}

// inboundSA reads the gateway's one inbound SA (of two): its SPI, packets
// and replay drops.
func inboundSA(t *testing.T, ctx context.Context, g *gateway) func() (spi uint32, packets, dropReplay uint64) {
	return func() (uint32, uint64, uint64) {
		t.Helper()
		sas, err := g.d.SAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		in, ok := saByDir(sas, "in")
		if !ok || len(sas) != 2 {
			t.Fatalf("want one inbound SA among two: %+v", sas)
		}
		return parseSPI(t, in.SPI), in.Packets, in.DropReplay
	}
}

// waitFlowing waits until the gateway's outbound SA has carried n more
// packets: a stream started is going through the tunnel.
func waitFlowing(t *testing.T, ctx context.Context, g *gateway, n uint64) {
	t.Helper()
	out := func() (uint64, error) {
		sas, err := g.d.SAs(ctx)
		if err != nil {
			return 0, err
		}
		s, ok := saByDir(sas, "out")
		if !ok {
			return 0, fmt.Errorf("no outbound SA: %+v", sas)
		}
		return s.Packets, nil
	}
	p0, err := out()
	if err != nil {
		t.Fatal(err)
	}
	err = lab.PollFor(ctx, "the stream through the tunnel", 20*time.Second, 50*time.Millisecond, func() (bool, error) {
		p, err := out()
		return err == nil && p >= p0+n, fmt.Errorf("outbound SA at %d packets (%d before): %v", p, p0, err)
	})
	if err != nil {
		t.Fatal(err)
	}
}
