package fastpath

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// The per-burst caches of the wire path (dp_plain.h's last source whose
// reverse path passed, rpf_ok's verdict in struct sp_ctx, dp_own.h's last
// own destination) remember one address for the rest of a burst: a packet
// with another address in the same burst must be judged on its own. The
// worker sleeps 100 ms when idle (IdleSleep), so two frames sent back to
// back wait in the ring together and arrive in one burst:
//
//   - a legitimate source, then a spoofed one (a source the FIB routes
//     elsewhere, which an outbound policy would protect): the first is
//     encrypted, the second dropped (drop_spoof);
//   - ESP-in-UDP to the gateway's own address, then NAT-T UDP to a host
//     behind it (not own): the second is transit UDP under policy,
//     encrypted, not taken for ESP-in-UDP (spi_held).
//
// And held packets go before the burst that releases them: those held
// for a neighbour out before the packets of the burst that finds it in a
// new FIB (the peer's replay window takes ESP in the order of its
// sequence numbers), and ESP held for an SPI that had no SA yet decrypts
// before ESP of that SA in the burst after the SA came (our own window).
// A frame addressed to another host's MAC in the same burst as one for
// the port's goes to the kernel, never out encrypted.

const burstEnv = "SWANPATH_FASTPATH_BURST_CHILD"

func TestFastpathBurstCaches(t *testing.T) {
	runChild(t, "fpc", "TestFastpathBurstCachesChild", burstEnv, "", true)
}

func TestFastpathBurstCachesChild(t *testing.T) {
	ns := childArg(t, burstEnv, "TestFastpathBurstCaches")
	fp, err := Open(Config{
		EALArgs:   childEAL(ns, "-l", "0,1"),
		Ports:     []PortConfig{{Name: "a", Device: "net_af_packet0,iface=va", Tap: "tpa"}},
		IdleSleep: 100 * time.Millisecond,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	fp.SetClosed(false)
	vb, err := net.InterfaceByName("vb")
	if err != nil {
		t.Fatal(err)
	}
	wire := openRaw(t, vb.Index)
	defer syscall.Close(wire)
	portMAC := fp.Ports()[0].MAC
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	tun := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x8101, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 81,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500, ReplayWindow: 32}
	out, _ := e.addPair(tun, key)
	sel := model.Selector{Src: netip.MustParsePrefix("10.1.0.0/24"), Dst: netip.MustParsePrefix("10.2.0.0/24")}
	if err := fp.SetPolicies([]dataplane.Binding{{Policy: &model.Policy{PolicyID: model.PolicyID{Sel: sel, Dir: model.DirOut},
		Reqid: 81, Mode: model.ModeTunnel}, SA: out, HasSA: true}}); err != nil {
		t.Fatal(err)
	}
	// 10.1.0.0/25 is behind another interface (a local route): a source
	// in it cannot come in on this port; 10.1.0.128/25 can (default route)
	fib := wireFIB(vb, gwAddr)
	fib.Routes = append(fib.Routes, dataplane.Route{Dst: netip.MustParsePrefix("10.1.0.0/25"), Local: true})
	if err := fp.SetFIB(fib); err != nil {
		t.Fatal(err)
	}
	settle(wire)
	legit, spoofed := netip.MustParseAddr("10.1.0.200"), netip.MustParseAddr("10.1.0.10")

	// oneEach sends a and b back to back once the worker sleeps, 10
	// rounds, and wants counter x up by exactly one every round and y by
	// at least one (tap_tx also counts what the kernel at the other end
	// sends by itself, IPv6 neighbour discovery and the like; each
	// mistake a round catches shows as x +0 or +2)
	oneEach := func(what string, a, b []byte, x, y string) {
		t.Helper()
		for i := range 10 {
			c0 := e.counters()
			time.Sleep(5 * time.Millisecond) // past the worker's busy polls: asleep
			e.send(a)
			e.send(b)
			var dx, dy uint64
			for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
				c := e.counters()
				dx, dy = c[x]-c0[x], c[y]-c0[y]
				if dx >= 1 && dx+dy >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("round %d, %s: %s +%d, %s +%d after 3 s (counters %v)", i, what, x, dx, y, dy, c)
				}
			}
			if dx != 1 || dy < 1 {
				t.Fatalf("round %d, %s in one burst: %s +%d, %s +%d; want +1, at least +1", i, what, x, dx, y, dy)
			}
		}
	}
	oneEach("a legitimate then a spoofed source",
		frame(portMAC, vb.HardwareAddr, ipv4udp(legit, h2, 1000, 2000, 64, []byte("legit"))),
		frame(portMAC, vb.HardwareAddr, ipv4udp(spoofed, h2, 1000, 2000, 64, []byte("spoof"))),
		"esp_out", "drop_spoof")
	// unknown SPI: held, not decrypted; the transit NAT-T carries a
	// non-zero "SPI" too
	espInUDP := ipv4udp(peerAddr, gwAddr, 4500, 4500, 64, []byte("\x00\x00\x99\x01\x00\x00\x00\x01esp-in-udp-to-us!"))
	transit := ipv4udp(legit, h2, 4500, 4500, 64, []byte("\x00\x00\x90\x01\x00\x00\x00\x01transit-natt"))
	oneEach("ESP-in-UDP to the gateway then NAT-T in transit",
		frame(portMAC, vb.HardwareAddr, espInUDP), frame(portMAC, vb.HardwareAddr, transit),
		"esp_out", "spi_held")
	// another host's frame (a switch flooded it): the same packet, to a
	// MAC not the port's, goes to the kernel (tap_tx), not out encrypted;
	// to the port's MAC it is encrypted (esp_out)
	oneEach("a frame for another host's MAC then one for the port's",
		frame(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}, vb.HardwareAddr, ipv4udp(legit, h2, 1000, 2000, 64, []byte("flooded"))),
		frame(portMAC, vb.HardwareAddr, ipv4udp(legit, h2, 1000, 2000, 64, []byte("ours"))),
		"esp_out", "tap_tx")

	// held for the neighbour: three packets while the FIB has none for
	// the peer; then the neighbour and a fourth packet, which the worker
	// finds together when it wakes: on the wire in sequence order
	noNeigh := fib
	noNeigh.Neighs = nil
	if err := fp.SetFIB(noNeigh); err != nil {
		t.Fatal(err)
	}
	settle(wire)
	st0, _ := fp.SAStats(out)
	plainTo := func(i int) []byte {
		return frame(portMAC, vb.HardwareAddr, ipv4udp(legit, h2, uint16(3000+i), 2000, 64, []byte("held")))
	}
	for i := range 3 {
		e.send(plainTo(i))
	}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
		if st, _ := fp.SAStats(out); st.Packets == st0.Packets+3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("three packets not encrypted and held (counters %v)", e.counters())
		}
	}
	time.Sleep(5 * time.Millisecond) // the worker asleep
	// SetFIB publishes the FIB, then waits for the worker to pass a
	// quiescent point (to free the old one): the fourth packet goes in
	// meanwhile, so that the worker wakes to both
	before := fp.publishedFIB()
	fibSet := make(chan error, 1)
	go func() { fibSet <- fp.SetFIB(fib) }()
	for deadline := time.Now().Add(3 * time.Second); fp.publishedFIB() == before; time.Sleep(50 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatal("the FIB with the neighbour was not published")
		}
	}
	e.send(plainTo(3))
	if err := <-fibSet; err != nil {
		t.Fatal(err)
	}
	isOurs := func(ip []byte) bool {
		return ip[9] == 17 && binary.BigEndian.Uint16(ip[22:]) == 4500 && binary.BigEndian.Uint32(ip[28:]) == 0x8101
	}
	var seqs []uint32
	for range 4 {
		f, err := recvType(wire, 3*time.Second, 0x0800, isOurs)
		if err != nil {
			t.Fatalf("after %v: %v (counters %v)", seqs, err, e.counters())
		}
		seqs = append(seqs, binary.BigEndian.Uint32(f[14+32:]))
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("ESP left in the order %v: the held packets must go before the one that found the neighbour", seqs)
		}
	}

	// held for the SA: a rekey's new SA (0x8201) that the peer uses
	// before it is installed here. Its ESP (made by an outbound SA of the
	// same key and SPI, turned around: both ends are this fast path)
	// numbers 1-3 held, then the inbound SA and number 40 together: all
	// four decrypt, none below the 32-packet replay window
	fib2 := wireFIB(vb, gwAddr, peerAddr)
	if err := fp.SetFIB(fib2); err != nil {
		t.Fatal(err)
	}
	tun2 := tun
	tun2.SPI, tun2.Reqid = 0x8201, 82
	tun2.EncKey = append(model.Key(nil), key...)
	out2 := tun2.SAID
	if err := fp.AddSA(&tun2); err != nil {
		t.Fatal(err)
	}
	sel82 := model.Selector{Src: netip.MustParsePrefix("10.1.0.128/25"), Dst: netip.MustParsePrefix("10.2.0.0/24")}
	for _, b := range []dataplane.Binding{
		{Policy: &model.Policy{PolicyID: model.PolicyID{Sel: sel82, Dir: model.DirOut}, Reqid: 82, Mode: model.ModeTunnel}, SA: out2, HasSA: true},
		{Policy: &model.Policy{PolicyID: model.PolicyID{Sel: sel82, Dir: model.DirFwd}, Reqid: 82, Mode: model.ModeTunnel}},
	} {
		if err := fp.SetPolicy(b); err != nil {
			t.Fatal(err)
		}
	}
	is82 := func(ip []byte) bool {
		return ip[9] == 17 && binary.BigEndian.Uint16(ip[22:]) == 4500 && binary.BigEndian.Uint32(ip[28:]) == 0x8201
	}
	settle(wire)
	var esp82 [][]byte
	for deadline := time.Now().Add(5 * time.Second); len(esp82) < 40; {
		e.send(plainTo(10 + len(esp82)))
		f, err := recvType(wire, 500*time.Millisecond, 0x0800, is82)
		if err == nil {
			esp82 = append(esp82, e.back(f))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 40 ESP packets of SA 0x8201 (counters %v)", len(esp82), e.counters())
		}
	}
	h0 := e.counters()["spi_held"]
	for _, f := range esp82[:3] {
		e.send(f)
	}
	e.wait("spi_held", h0+3)
	time.Sleep(5 * time.Millisecond) // the worker asleep
	in2 := tun2
	in2.Inbound, in2.Src, in2.Dst = true, tun2.Dst, tun2.Src
	in2.EncKey = append(model.Key(nil), key...)
	if err := fp.AddSA(&in2); err != nil {
		t.Fatal(err)
	}
	e.send(esp82[39])
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
		st, _ := fp.SAStats(in2.SAID)
		if st.Packets+st.DropReplay >= 4 {
			if st.DropReplay != 0 || st.Packets != 4 {
				t.Fatalf("held ESP 1-3 and ESP 40 of a new SA: %d decrypted, %d dropped as replays; want 4, 0", st.Packets, st.DropReplay)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbound SA 0x8201: %+v (counters %v)", st, e.counters())
		}
	}
}
