package fastpath

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// fragCases checks fragments through the loop, in the child process of
// TestFastpathRoundTrip (issue 18, point 2: fragments are protected
// traffic). A policy that protects UDP to port 2000 only, so the ports of
// the first fragment decide for all of them:
//   - a 4,000-byte datagram from the wire in fragments, out of order
//     (IPv4 and IPv6), leaves encrypted, as fragments of one ESP packet
//     that decrypts to the whole datagram; none of it in clear;
//   - the same from the kernel's own socket through the TAP;
//   - spoofed plaintext fragments from the wire claiming a protected
//     source are dropped by the inbound policy (drop_policy);
//   - a peer's ESP packets each carrying one fragment (as Linux sends)
//     are decrypted, reassembled, checked and forwarded (in fragments);
//     so is ESP that came in fragments itself;
//   - IP from the TAP that does not parse is dropped, not sent raw;
//   - a lone fragment is dropped after the timeout (drop_frag);
//   - every mbuf of the fragment pools comes back.
func fragCases(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) {
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	const spi = 0x8001
	tun := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: spi, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 80,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500, ReplayWindow: 64}
	out, in := e.addPair(tun, key)
	defer func() {
		e.delSAs(out, in)
		_ = fp.SetPolicies(nil)
	}()
	// both ends are this fast path (see TestFastpathChild): ESP-in-UDP
	// is taken only to these; the cases after this one rely on it too
	fib := wireFIB(vb, gwAddr, gw6, peerAddr, peer6)
	if err := fp.SetFIB(fib); err != nil {
		t.Fatal(err)
	}
	var binds []dataplane.Binding
	for _, c := range []struct{ src, dst string }{
		{"10.1.0.0/24", "10.2.0.0/24"}, {"fd00:1::/64", "fd00:2::/64"},
		{"192.0.2.1/32", "10.2.0.0/24"}, {"fd00:192::1/128", "fd00:2::/64"}, // the gateway's own, through the TAP
	} {
		outSel := model.Selector{Src: netip.MustParsePrefix(c.src), Dst: netip.MustParsePrefix(c.dst), Proto: 17,
			DstPortLo: 2000, DstPortHi: 2000}
		inSel := model.Selector{Src: netip.MustParsePrefix(c.dst), Dst: netip.MustParsePrefix(c.src), Proto: 17,
			SrcPortLo: 2000, SrcPortHi: 2000}
		binds = append(binds,
			dataplane.Binding{Policy: &model.Policy{PolicyID: model.PolicyID{Sel: outSel, Dir: model.DirOut}, Reqid: 80,
				Mode: model.ModeTunnel}, SA: out, HasSA: true},
			dataplane.Binding{Policy: &model.Policy{PolicyID: model.PolicyID{Sel: inSel, Dir: model.DirFwd}, Reqid: 80,
				Mode: model.ModeTunnel}})
	}
	if err := fp.SetPolicies(binds); err != nil {
		t.Fatal(err)
	}
	settle(wire)
	wholeFree, wholeSize := fp.fragPoolsFree()
	if wholeFree != wholeSize {
		t.Fatalf("fragment pools: %d of %d mbufs free before any fragment", wholeFree, wholeSize)
	}

	payload := func(n int, tag string) []byte {
		p := make([]byte, n)
		_, _ = rand.Read(p)
		copy(p, tag)
		return p
	}
	// isOurESP: an outer IPv4 fragment or packet of the SA's ESP-in-UDP
	isOurESP := func(ip []byte) bool {
		return ip[0]>>4 == 4 && ip[9] == 17 && bytes.Equal(ip[12:16], gwAddr.AsSlice()) &&
			bytes.Equal(ip[16:20], peerAddr.AsSlice())
	}
	// encrypted: what leaves for the datagram d (inner IP packet) is ESP
	// of the SA in IPv4 fragments, which put together and decrypted give
	// d with its TTL / hop limit one less; d never appears in clear
	encrypted := func(what string, d []byte, send func()) {
		t.Helper()
		g := gather(t, fp, wire, 0x0800, isOurESP)
		send()
		esp := g.whole4(what)
		g.noneContains(what, d[len(d)-64:])
		inner, next := openESP(t, key, spi, esp[20+8:])
		want := slices.Clone(d)
		if d[0]>>4 == 4 {
			want[8]--
			binary.BigEndian.PutUint16(want[10:], 0)
			binary.BigEndian.PutUint16(want[10:], csum(want[:20]))
			if next != 4 {
				t.Fatalf("%s: next header %d, want 4", what, next)
			}
		} else {
			want[7]--
			if next != 41 {
				t.Fatalf("%s: next header %d, want 41", what, next)
			}
		}
		if !bytes.Equal(inner, want) {
			t.Fatalf("%s: decrypted %d bytes, not the datagram sent (%d bytes): % x ... vs % x ...",
				what, len(inner), len(want), inner[:min(48, len(inner))], want[:48])
		}
	}

	// A. from the wire, in fragments, last first
	for _, v6 := range []bool{false, true} {
		before := e.counters()
		var d []byte
		var frags [][]byte
		if v6 {
			d = ipv6udp(h16, h26, 1000, 2000, 64, payload(4000, "wire-v6"))
			frags = fragment6(d, 1448, 0x1234)
		} else {
			d = withID(ipv4udp(h1, h2, 1000, 2000, 64, payload(4000, "wire-v4")), 0x4242)
			frags = fragment4(d, 1480)
		}
		what := fmt.Sprintf("wire fragments (IPv6 %v)", v6)
		encrypted(what, d, func() {
			for _, i := range []int{2, 0, 1} {
				e.send(frameFor(portMAC, vb.HardwareAddr, frags[i]))
			}
		})
		// IPv4 on this port comes whole: the kernel reassembles it for
		// the af_packet PMD's socket (see afpFrame); IPv6 the loop does
		reassembled := uint64(btoi(v6))
		now := e.counters()
		if now["frag_in"] != before["frag_in"]+reassembled || now["frag_out"] < before["frag_out"]+3 ||
			now["drop_malformed"] != before["drop_malformed"] || now["drop_frag"] != before["drop_frag"] {
			t.Fatalf("%s: counters before %v after %v", what, before, now)
		}
	}

	// B. from the kernel through the TAP: its own 4,000-byte datagrams,
	// fragmented by the kernel (the TAP's MTU is 1500)
	for _, c := range []struct {
		gw, peer, dst netip.Addr
		prefix        int
		route         string
	}{
		{gwAddr, peerAddr, h2, 24, "10.2.0.0/24"},
		{gw6, peer6, h26, 64, "fd00:2::/64"},
	} {
		tapUp(t, "tpa", netip.PrefixFrom(c.gw, c.prefix), c.peer, vb.HardwareAddr)
		ipCmd(t, "route", "replace", c.route, "via", c.peer.String(), "dev", "tpa")
		conn := udpFrom(t, c.gw, 1000)
		p := payload(4000, "tap-"+c.gw.String())
		g := gather(t, fp, wire, 0x0800, isOurESP)
		if _, err := conn.WriteToUDPAddrPort(p, netip.AddrPortFrom(c.dst, 2000)); err != nil {
			t.Fatal(err)
		}
		what := "the kernel's datagram to " + c.dst.String()
		esp := g.whole4(what)
		g.noneContains(what, p[len(p)-64:])
		inner, _ := openESP(t, key, spi, esp[20+8:])
		if !bytes.HasSuffix(inner, p) || bytes.Contains(inner[:len(inner)-len(p)], []byte("tap-")) {
			t.Fatalf("%s: decrypted %d bytes, not the 4000 sent", what, len(inner))
		}
		conn.Close()
	}

	// C. spoofed plaintext from the wire, in fragments, claiming a source
	// the inbound policy protects: dropped as a whole, never handed to
	// the kernel to reassemble
	for _, v6 := range []bool{false, true} {
		before := e.counters()
		var frags [][]byte
		if v6 {
			frags = fragment6(ipv6udp(h26, h16, 2000, 1000, 64, payload(3000, "spoof6")), 1448, 0x5678)
		} else {
			frags = fragment4(withID(ipv4udp(h2, h1, 2000, 1000, 64, payload(3000, "spoof4")), 0x4444), 1480)
		}
		for _, i := range []int{1, 0, 2} {
			e.send(frameFor(portMAC, vb.HardwareAddr, frags[i]))
		}
		e.wait("drop_policy", before["drop_policy"]+1)
		if now := e.counters(); now["frag_in"] != before["frag_in"]+uint64(btoi(v6)) {
			t.Fatalf("spoofed fragments (IPv6 %v): frag_in %d -> %d, want +1 (reassembled, then dropped whole)",
				v6, before["frag_in"], now["frag_in"])
		}
	}

	// D. the peer's ESP, one packet per fragment of a 4,000-byte datagram
	// (as Linux sends them), out of order: decrypted, reassembled,
	// checked against the inbound policy (ports in the first fragment
	// only) and forwarded, in fragments again for the 1500-byte wire
	for _, v6 := range []bool{false, true} {
		var d []byte
		var frags [][]byte
		etype, next := uint16(0x0800), byte(4)
		if v6 {
			d = ipv6udp(h26, h16, 2000, 1000, 64, payload(4000, "peer6"))
			frags = fragment6(d, 1344, 0x9abc)
			etype, next = 0x86dd, 41
		} else {
			d = withID(ipv4udp(h2, h1, 2000, 1000, 64, payload(4000, "peer4")), 0x4343)
			frags = fragment4(d, 1400)
		}
		before := e.counters()
		g := gather(t, fp, wire, etype, func(ip []byte) bool {
			if v6 {
				return bytes.Equal(ip[8:24], h26.AsSlice()) && bytes.Equal(ip[24:40], h16.AsSlice())
			}
			return bytes.Equal(ip[12:16], h2.AsSlice()) && bytes.Equal(ip[16:20], h1.AsSlice())
		})
		for _, i := range []int{1, 2, 0} {
			seq := uint32(100 + 10*btoi(v6) + i)
			e.send(frame(portMAC, vb.HardwareAddr, sealESP(key, spi, seq, frags[i], next)))
		}
		what := fmt.Sprintf("decrypted fragments (IPv6 %v)", v6)
		var got []byte
		if v6 {
			got = g.whole6(what)
		} else {
			got = g.whole4(what)
		}
		if !bytes.Equal(got[len(got)-4008:], d[len(d)-4008:]) {
			t.Fatalf("%s: the datagram forwarded is not the one sent", what)
		}
		now := e.counters()
		if now["esp_in"] != before["esp_in"]+1 || now["frag_in"] != before["frag_in"]+1 {
			t.Fatalf("%s: counters before %v after %v", what, before, now)
		}
	}

	// D2. the peer's ESP of a whole 4,000-byte datagram, the ESP packet
	// in fragments (the peer's kernel fragments what its ESP made):
	// decrypted and forwarded, in fragments for the wire
	{
		d := withID(ipv4udp(h2, h1, 2000, 1000, 64, payload(4000, "outer-frag")), 0x4747)
		esp := withID(sealESP(key, spi, 200, d, 4), 0x4848)
		g := gather(t, fp, wire, 0x0800, func(ip []byte) bool {
			return bytes.Equal(ip[12:16], h2.AsSlice()) && bytes.Equal(ip[16:20], h1.AsSlice())
		})
		for _, f := range fragment4(esp, 1480) {
			e.send(frame(portMAC, vb.HardwareAddr, f))
		}
		if got := g.whole4("ESP in fragments"); !bytes.Equal(got[20:], d[20:]) {
			t.Fatal("ESP in fragments: the datagram forwarded is not the one sent")
		}
	}

	// E. from the TAP, IP that cannot be parsed (its lengths lie): dropped
	// and counted, not sent to the wire raw
	tapSock := openRaw(t, ifIndex(t, "tpa"))
	defer syscall.Close(tapSock)
	for _, v6 := range []bool{false, true} {
		var bad []byte
		if v6 {
			bad = frame6(vb.HardwareAddr, portMAC, ipv6udp(gw6, h26, 1000, 2001, 64, []byte("unparseable-6")))
			binary.BigEndian.PutUint16(bad[14+4:], 2000) // payload length beyond the frame
		} else {
			bad = frame(vb.HardwareAddr, portMAC, ipv4udp(gwAddr, h2, 1000, 2001, 64, []byte("unparseable-4")))
			binary.BigEndian.PutUint16(bad[14+2:], 2000) // total length beyond the frame
		}
		before := e.counters()
		if err := syscall.Sendto(tapSock, bad, 0, &syscall.SockaddrLinklayer{Ifindex: ifIndex(t, "tpa")}); err != nil {
			t.Fatal(err)
		}
		e.wait("drop_malformed", before["drop_malformed"]+1)
		if f, err := recvType(wire, 300*time.Millisecond, binary.BigEndian.Uint16(bad[12:]), func(ip []byte) bool {
			return bytes.Contains(ip, []byte("unparseable"))
		}); err == nil {
			t.Fatalf("unparseable IP from the TAP reached the wire: % x", f)
		}
	}

	// F. a lone fragment: dropped once the reassembly timeout is over
	// (IPv6: a lone IPv4 fragment would wait in the kernel, which
	// reassembles IPv4 for the af_packet port)
	before := e.counters()
	lone := fragment6(ipv6udp(h16, h26, 1000, 2000, 64, payload(3000, "lone")), 1448, 0x4545)
	e.send(frameFor(portMAC, vb.HardwareAddr, lone[1]))
	for deadline := time.Now().Add(6 * time.Second); e.counters()["drop_frag"] < before["drop_frag"]+1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a lone fragment was not dropped after the timeout: %v", e.counters())
		}
	}

	// G. every mbuf of the fragment pools is back
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		free, size := fp.fragPoolsFree()
		if free == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fragment pools: %d of %d mbufs free after the fragment cases: leak", free, size)
		}
	}
}

// fragStopCheck: a fragment held in a reassembly table when the workers
// stop is freed with the table (the rx pool is full again). Stops fp.
func fragStopCheck(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr, avail0 int) {
	t.Helper()
	lone := fragment6(ipv6udp(h16, h26, 1000, 2000, 64, make([]byte, 3000)), 1448, 0x4646)
	before := fp.PortStats()[0].Counters["rx"]
	if err := syscall.Sendto(wire, frameFor(portMAC, vb.HardwareAddr, lone[0]), 0, &syscall.SockaddrLinklayer{Ifindex: vb.Index}); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, fp, "rx", before+1)
	if avail := fp.MbufsAvailable(); avail >= avail0 {
		t.Fatalf("a fragment held for reassembly, yet %d mbufs free (%d before the traffic)", avail, avail0)
	}
	fp.Stop()
	if avail := fp.MbufsAvailable(); avail != avail0 {
		t.Fatalf("after Stop, %d mbufs free, %d before the traffic: the reassembly table leaked", avail, avail0)
	}
}

// withID sets the identification of an IPv4 packet.
func withID(p []byte, id uint16) []byte {
	binary.BigEndian.PutUint16(p[4:], id)
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], csum(p[:20]))
	return p
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func ifIndex(t *testing.T, name string) int {
	t.Helper()
	i, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return i.Index
}

// frameFor puts an IPv4 or IPv6 packet in an Ethernet frame.
func frameFor(dst, src net.HardwareAddr, ip []byte) []byte {
	if ip[0]>>4 == 6 {
		return frame6(dst, src, ip)
	}
	return frame(dst, src, ip)
}

// fragment4 cuts an IPv4 packet (20-byte header) into fragments of at
// most size bytes of data (a multiple of 8), as a host does.
func fragment4(p []byte, size int) [][]byte {
	var out [][]byte
	data := p[20:]
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		f := append(slices.Clone(p[:20]), data[off:end]...)
		fo := uint16(off / 8)
		if end < len(data) {
			fo |= 0x2000 // MF
		}
		binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
		binary.BigEndian.PutUint16(f[6:], fo)
		binary.BigEndian.PutUint16(f[10:], 0)
		binary.BigEndian.PutUint16(f[10:], csum(f[:20]))
		out = append(out, f)
	}
	return out
}

// fragment6 cuts an IPv6 packet (no extension headers) into fragments
// with a fragment header right behind the IPv6 header.
func fragment6(p []byte, size int, id uint32) [][]byte {
	var out [][]byte
	data := p[40:]
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		fh := make([]byte, 8)
		fh[0] = p[6]
		fo := uint16(off/8) << 3
		if end < len(data) {
			fo |= 1 // M
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		f := append(append(slices.Clone(p[:40]), fh...), data[off:end]...)
		f[6] = 44
		binary.BigEndian.PutUint16(f[4:], uint16(len(f)-40))
		out = append(out, f)
	}
	return out
}

// sealESP is ESP-in-UDP (peer:4500 -> gateway:4500, IPv4) of the SA spi
// (AES-GCM-128 with a 16-byte ICV; key is the key and 4-byte salt)
// carrying inner with next header next.
func sealESP(key model.Key, spi, seq uint32, inner []byte, next byte) []byte {
	pad := make([]byte, (4-(len(inner)+2)%4)%4)
	for i := range pad {
		pad[i] = byte(i + 1)
	}
	return sealPayload(key, spi, seq, append(append(slices.Clone(inner), pad...), byte(len(pad)), next))
}

// sealPayload is sealESP for a payload with its trailer (padding, pad
// length, next header) already in place, right or wrong.
func sealPayload(key model.Key, spi, seq uint32, pt []byte) []byte {
	blk, _ := aes.NewCipher(key[:16])
	gcm, _ := cipher.NewGCM(blk)
	hdr := make([]byte, 16)
	binary.BigEndian.PutUint32(hdr[0:], spi)
	binary.BigEndian.PutUint32(hdr[4:], seq)
	binary.BigEndian.PutUint64(hdr[8:], uint64(seq)) // IV
	nonce := append(slices.Clone([]byte(key[16:20])), hdr[8:16]...)
	body := gcm.Seal(hdr, nonce, pt, hdr[:8])
	udp := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint16(udp[0:], 4500)
	binary.BigEndian.PutUint16(udp[2:], 4500)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(body)))
	udp = append(udp, body...)
	ip := make([]byte, 20, 20+len(udp))
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:], peerAddr.AsSlice())
	copy(ip[16:], gwAddr.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], csum(ip[:20]))
	return append(ip, udp...)
}

// openESP decrypts an ESP packet (from the SPI on) of SA spi: the inner
// packet and the trailer's next header.
func openESP(t *testing.T, key model.Key, spi uint32, esp []byte) ([]byte, byte) {
	t.Helper()
	if len(esp) < 16+16+2 || binary.BigEndian.Uint32(esp) != spi {
		t.Fatalf("not ESP of SPI %#x: % x", spi, esp[:min(16, len(esp))])
	}
	blk, _ := aes.NewCipher(key[:16])
	gcm, _ := cipher.NewGCM(blk)
	nonce := append(slices.Clone([]byte(key[16:20])), esp[8:16]...)
	pt, err := gcm.Open(nil, nonce, esp[16:], esp[:8])
	if err != nil {
		t.Fatalf("ESP of SPI %#x does not decrypt: %v", spi, err)
	}
	padLen := int(pt[len(pt)-2])
	return pt[:len(pt)-2-padLen], pt[len(pt)-1]
}

// gatherer collects, in the background, the IP packets of one ethertype
// that match from the test's end of the veth, and every frame seen.
type gatherer struct {
	t      *testing.T
	frames chan []byte
	quit   chan struct{}
	all    [][]byte
	etype  uint16
	match  func([]byte) bool
	fp     *Fastpath // for the counters when something is missing
}

func gather(t *testing.T, fp *Fastpath, fd int, etype uint16, match func([]byte) bool) *gatherer {
	settle(fd)
	g := &gatherer{t: t, fp: fp, frames: make(chan []byte, 256), quit: make(chan struct{}), etype: etype, match: match}
	go func() {
		defer close(g.frames)
		buf := make([]byte, 4096)
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
			n, from, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				select {
				case <-g.quit:
					return
				default:
					continue
				}
			}
			if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == 4 /* PACKET_OUTGOING */ {
				continue
			}
			select {
			case g.frames <- slices.Clone(buf[:n]):
			case <-g.quit:
				return
			}
		}
	}()
	return g
}

// stop ends the gathering (the socket is the test's again), keeping
// what came meanwhile for noneContains.
func (g *gatherer) stop() {
	close(g.quit)
	for f := range g.frames {
		g.all = append(g.all, f)
	}
}

// wait returns the next matching IP packet; false when the gatherer
// is done.
func (g *gatherer) wait() ([]byte, bool) {
	for f := range g.frames {
		g.all = append(g.all, f)
		if len(f) > 14+40 && binary.BigEndian.Uint16(f[12:]) == g.etype && g.match(f[14:]) {
			return f[14:], true
		}
	}
	return nil, false
}

// whole4 puts IPv4 fragments (one datagram) together as they come.
func (g *gatherer) whole4(what string) []byte {
	g.t.Helper()
	return g.whole(what, func(ip []byte) fragment {
		if csum(ip[:20]) != 0 {
			g.t.Fatalf("%s: IPv4 header checksum wrong in % x", what, ip[:20])
		}
		fo := binary.BigEndian.Uint16(ip[6:])
		return fragment{off: int(fo&0x1fff) * 8, data: ip[20:binary.BigEndian.Uint16(ip[2:])],
			hdr: slices.Clone(ip[:20]), more: fo&0x2000 != 0}
	}, func(hdr, p []byte) []byte {
		binary.BigEndian.PutUint16(hdr[2:], uint16(20+len(p)))
		binary.BigEndian.PutUint16(hdr[6:], 0)
		return append(hdr, p...)
	})
}

// whole6 puts IPv6 fragments (fragment header right behind the IPv6
// header) together; a packet without one is whole already.
func (g *gatherer) whole6(what string) []byte {
	g.t.Helper()
	return g.whole(what, func(ip []byte) fragment {
		if ip[6] != 44 {
			return fragment{whole: true}
		}
		fo := binary.BigEndian.Uint16(ip[42:])
		hdr := slices.Clone(ip[:40])
		hdr[6] = ip[40]
		return fragment{off: int(fo &^ 7), data: ip[48 : 40+int(binary.BigEndian.Uint16(ip[4:]))], hdr: hdr, more: fo&1 != 0}
	}, func(hdr, p []byte) []byte {
		binary.BigEndian.PutUint16(hdr[4:], uint16(len(p)))
		return append(hdr, p...)
	})
}

// fragment is one IP packet as a piece of a datagram: its data at off,
// the header the whole datagram gets (used from the first piece), more
// pieces after it; whole: the packet is no fragment.
type fragment struct {
	off         int
	data, hdr   []byte
	more, whole bool
}

// whole collects the pieces split finds in the packets as they come
// until the datagram is complete, and returns join(header, data).
func (g *gatherer) whole(what string, split func([]byte) fragment, join func(hdr, p []byte) []byte) []byte {
	g.t.Helper()
	parts := map[int][]byte{}
	var hdr []byte
	total := -1
	for {
		ip, ok := g.wait()
		if !ok {
			g.t.Fatalf("%s: not all fragments came (%d, total %d; %d frames seen; counters %v)", what, len(parts), total, len(g.all), g.fp.PortStats()[0].Counters)
		}
		f := split(ip)
		if f.whole {
			g.stop()
			return ip
		}
		parts[f.off] = f.data
		if f.off == 0 {
			hdr = f.hdr
		}
		if !f.more {
			total = f.off + len(f.data)
		}
		if p := assemble(parts, total); p != nil && hdr != nil {
			g.stop()
			return join(hdr, p)
		}
	}
}

// assemble joins fragment data by offset once all of 0..total is there.
func assemble(parts map[int][]byte, total int) []byte {
	if total < 0 {
		return nil
	}
	var p []byte
	for len(p) < total {
		d, ok := parts[len(p)]
		if !ok || len(d) == 0 {
			return nil
		}
		p = append(p, d...)
	}
	return p
}

// noneContains fails if any frame seen (of any kind) carries clear.
func (g *gatherer) noneContains(what string, clear []byte) {
	g.t.Helper()
	for _, f := range g.all {
		if bytes.Contains(f, clear) {
			g.t.Fatalf("%s: in clear on the wire: % x", what, f[:min(64, len(f))])
		}
	}
}
