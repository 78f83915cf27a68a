package fastpath

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// IPv6 and transport mode, in the child process of TestFastpathRoundTrip:
// tunnels of every family combination (6in6, 4in6 on the same SA, 6in4
// over plain ESP), transport mode for the gateway's own traffic through
// its TAP (IPv4 and IPv6), IKE and neighbour discovery bypassing a
// transport policy that covers everything, ICMPv6 "packet too big", and
// hostile IPv6 extension header chains.

var (
	gw6   = netip.MustParseAddr("fd00:192::1")
	peer6 = netip.MustParseAddr("fd00:192::2")
	h16   = netip.MustParseAddr("fd00:1::10")
	h26   = netip.MustParseAddr("fd00:2::10")
)

type famEnv struct {
	t       *testing.T
	fp      *Fastpath
	wire    int
	vb      *net.Interface
	portMAC net.HardwareAddr
}

// newFamEnv is the environment of a case function of the round-trip
// child, with a fresh random 20-byte key (AES-GCM-128 and its salt).
func newFamEnv(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) (*famEnv, model.Key) {
	key := make(model.Key, 20)
	_, _ = rand.Read(key)
	return &famEnv{t: t, fp: fp, wire: wire, vb: vb, portMAC: portMAC}, key
}

func (e *famEnv) send(f []byte) {
	e.t.Helper()
	if err := syscall.Sendto(e.wire, f, 0, &syscall.SockaddrLinklayer{Ifindex: e.vb.Index}); err != nil {
		e.t.Fatal(err)
	}
}

// recv waits for an incoming frame of ethertype etype whose IP packet match accepts.
func (e *famEnv) recv(what string, etype uint16, match func(ip []byte) bool) []byte {
	e.t.Helper()
	f, err := recvType(e.wire, 3*time.Second, etype, match)
	if err != nil {
		e.t.Fatalf("%s: %v (counters %v)", what, err, e.fp.PortStats()[0].Counters)
	}
	return f
}

// back turns a frame the fast path sent into one it receives.
func (e *famEnv) back(f []byte) []byte {
	g := append([]byte(nil), f...)
	copy(g[0:6], e.portMAC)
	copy(g[6:12], e.vb.HardwareAddr)
	return g
}

func (e *famEnv) addPair(tmpl model.SA, key model.Key) (out, in model.SAID) {
	e.t.Helper()
	for _, inbound := range []bool{false, true} {
		sa := tmpl
		sa.Inbound = inbound
		sa.EncKey = append(model.Key(nil), key...)
		if inbound {
			sa.Src, sa.Dst = tmpl.Dst, tmpl.Src
			sa.SrcPort, sa.DstPort = tmpl.DstPort, tmpl.SrcPort
		}
		id := sa.SAID
		id.Dst = sa.Dst
		if err := e.fp.AddSA(&sa); err != nil {
			e.t.Fatalf("add SA %s: %v", id, err)
		}
		if inbound {
			in = id
		} else {
			out = id
		}
	}
	return out, in
}

// delSAs deletes SAs a test added (errors ignored: a test may have deleted
// some itself).
func (e *famEnv) delSAs(ids ...model.SAID) {
	for _, id := range ids {
		_ = e.fp.DelSA(id)
	}
}

// withSPI is tmpl with another SPI (a rekeyed pair of the same tunnel).
func withSPI(tmpl model.SA, spi uint32) model.SA {
	tmpl.SPI = spi
	return tmpl
}

func (e *famEnv) counters() map[string]uint64 { return e.fp.PortStats()[0].Counters }

func (e *famEnv) wait(name string, want uint64) { e.t.Helper(); waitCounter(e.t, e.fp, name, want) }

// wireFIB is the FIB of the cases that send on the veth: the WAN
// 192.0.2.0/24 and fd00:192::/64 on port 0 with default routes via the
// peer (whose MAC is the veth's), the gateway's addresses local, and own
// as the gateway's own addresses.
func wireFIB(vb *net.Interface, own ...netip.Addr) dataplane.FIB {
	return dataplane.FIB{
		Routes: []dataplane.Route{
			{Dst: netip.MustParsePrefix("192.0.2.0/24"), Port: 0},
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Port: 0, Gateway: peerAddr},
			{Dst: netip.PrefixFrom(gwAddr, 32), Local: true},
			{Dst: netip.MustParsePrefix("fd00:192::/64"), Port: 0},
			{Dst: netip.MustParsePrefix("::/0"), Port: 0, Gateway: peer6},
			{Dst: netip.PrefixFrom(gw6, 128), Local: true},
		},
		Neighs: []dataplane.Neigh{
			{Port: 0, IP: peerAddr, MAC: vb.HardwareAddr},
			{Port: 0, IP: peer6, MAC: vb.HardwareAddr},
		},
		Addrs: own,
	}
}

func familyCases(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) {
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	// both ends are this fast path (see TestFastpathChild)
	fib := wireFIB(vb, gwAddr, gw6, peerAddr, peer6)
	if err := fp.SetFIB(fib); err != nil {
		t.Fatal(err)
	}
	sel := func(src, dst string) model.Selector {
		return model.Selector{Src: netip.MustParsePrefix(src), Dst: netip.MustParsePrefix(dst)}
	}
	pol := func(s model.Selector, d model.Dir, reqid uint32, mode model.Mode) *model.Policy {
		return &model.Policy{PolicyID: model.PolicyID{Sel: s, Dir: d}, Reqid: reqid, Mode: mode}
	}
	isESP6 := func(spi uint32) func([]byte) bool {
		return func(ip []byte) bool {
			return len(ip) > 56 && ip[6] == 17 && binary.BigEndian.Uint16(ip[42:]) == 4500 && binary.BigEndian.Uint32(ip[48:]) == spi
		}
	}
	plain6 := func(payload string) func([]byte) bool {
		return func(ip []byte) bool {
			return ip[6] == 17 && bytes.Equal(ip[8:24], h16.AsSlice()) && bytes.HasSuffix(ip, []byte(payload))
		}
	}
	plain4 := func(payload string) func([]byte) bool {
		return func(ip []byte) bool {
			return ip[9] == 17 && bytes.Equal(ip[12:16], h1.AsSlice()) && bytes.HasSuffix(ip, []byte(payload))
		}
	}

	// A. one tunnel SA with IPv6 outer addresses (ESP-in-UDP) carrying
	// IPv6 and IPv4 (6in6, 4in6): XFRM lets one SA carry both
	tun6 := model.SA{SAID: model.SAID{Dst: peer6, SPI: 0x6001, Proto: model.ProtoESP}, Src: gw6, Reqid: 61,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500, ReplayWindow: 32}
	out6, in6 := e.addPair(tun6, key)
	sel66, sel46 := sel("fd00:1::/64", "fd00:2::/64"), sel("10.1.0.0/24", "10.2.0.0/24")
	binds := []dataplane.Binding{
		{Policy: pol(sel66, model.DirOut, 61, model.ModeTunnel), SA: out6, HasSA: true},
		{Policy: pol(sel66, model.DirFwd, 61, model.ModeTunnel)},
		{Policy: pol(sel46, model.DirOut, 61, model.ModeTunnel), SA: out6, HasSA: true},
		{Policy: pol(sel46, model.DirFwd, 61, model.ModeTunnel)},
	}
	if err := fp.SetPolicies(binds); err != nil {
		t.Fatal(err)
	}
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(h16, h26, 1000, 2000, 64, []byte("six-in-six"))))
	esp := e.recv("6in6 encrypted", 0x86dd, isESP6(0x6001))
	ip := esp[14:]
	if !bytes.Equal(ip[8:24], gw6.AsSlice()) || !bytes.Equal(ip[24:40], peer6.AsSlice()) {
		t.Fatalf("6in6 outer addresses % x", ip[8:40])
	}
	if bytes.Contains(esp, []byte("six-in-six")) {
		t.Fatal("6in6: plaintext visible")
	}
	if l6csum(ip) != 0 {
		t.Fatal("6in6: UDP checksum of the outer header is wrong (IPv6 needs one)")
	}
	e.send(e.back(esp))
	dec := e.recv("6in6 decrypted", 0x86dd, plain6("six-in-six"))
	if hl := dec[14+7]; hl != 62 {
		t.Fatalf("6in6: hop limit %d after two forwarding hops, want 62", hl)
	}
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, []byte("four-in-six"))))
	esp = e.recv("4in6 encrypted", 0x86dd, isESP6(0x6001))
	e.send(e.back(esp))
	e.recv("4in6 decrypted", 0x0800, plain4("four-in-six"))
	if st, _ := fp.SAStats(in6); st.Packets != 2 {
		t.Fatalf("inbound 6in6/4in6 SA counted %d packets, want 2", st.Packets)
	}
	// the mapping note carries the IPv6 source (the frame came back from
	// our own address and port, not the peer's)
	var notes []dataplane.Note
	for deadline := time.Now().Add(2 * time.Second); len(notes) == 0 && time.Now().Before(deadline); {
		notes = fp.Notes()
	}
	if len(notes) == 0 || notes[0].Kind != dataplane.NoteMapping || notes[0].Src != gw6 || notes[0].SrcPort != 4500 {
		t.Fatalf("IPv6 mapping change not noted: %+v", notes)
	}
	drainNotes(fp)

	// A2. too big once encrypted: ICMPv6 packet too big, from the SA's
	// own (IPv6) address, with the inner size that fits
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(h16, h26, 1000, 2000, 64, make([]byte, 1500-48))))
	ptb := e.recv("ICMPv6 packet too big", 0x86dd, func(ip []byte) bool { return ip[6] == 58 && ip[40] == 2 })[14:]
	// 1500 - (40 IPv6 + 8 UDP + 8 ESP + 8 IV + 16 ICV) = 1420, minus the trailer: 1418
	if mtu := binary.BigEndian.Uint32(ptb[44:]); mtu != 1418 {
		t.Fatalf("packet too big MTU %d, want 1418", mtu)
	}
	if !bytes.Equal(ptb[8:24], gw6.AsSlice()) || !bytes.Equal(ptb[24:40], h16.AsSlice()) || l6csum(ptb) != 0 {
		t.Fatalf("bad ICMPv6 packet too big: % x", ptb[:48])
	}

	// A3. hostile IPv6: ESP behind a destination options header is
	// still ESP (and decrypts); a chain that runs past the packet and a
	// chain longer than 8 headers are dropped as malformed
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(h16, h26, 1000, 2000, 64, []byte("behind-ext"))))
	esp = e.back(e.recv("6in6 for the extension test", 0x86dd, isESP6(0x6001)))
	withExt := insertExt6(esp, 60, 1)
	e.send(withExt)
	e.recv("ESP behind a destination options header decrypted", 0x86dd, plain6("behind-ext"))
	before := e.counters()
	broken := insertExt6(esp, 60, 1)
	broken[14+40+1] = 200 // header length far beyond the packet
	e.send(broken)
	long := esp
	for range 9 {
		long = insertExt6(long, 60, 0)
	}
	e.send(long)
	trunc := append([]byte(nil), esp[:14+40]...) // payload length says more than there is
	e.send(trunc)
	// 520 bytes of IPv6 header in front of ESP: more than an mbuf's
	// l3_len holds (cut to 9 bits, the SPI would be read from the wrong
	// place and counted as an unknown SPI)
	huge := insertExt6(insertExt6(esp, 60, 29), 60, 29)
	e.send(huge)
	e.wait("drop_malformed", before["drop_malformed"]+4)
	if now := e.counters(); now["drop_unknown_spi"] != before["drop_unknown_spi"] || now["spi_held"] != before["spi_held"] {
		t.Fatalf("ESP behind 520 header bytes taken for an unknown SPI: drop_unknown_spi %d -> %d, spi_held %d -> %d",
			before["drop_unknown_spi"], now["drop_unknown_spi"], before["spi_held"], now["spi_held"])
	}

	// A4. trap on an IPv6 policy: the acquire carries IPv6 addresses
	if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol(sel66, model.DirOut, 62, model.ModeTunnel)}}); err != nil {
		t.Fatal(err)
	}
	drainNotes(fp)
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(h16, h26, 1000, 2000, 64, []byte("trap"))))
	var acq []dataplane.Note
	for deadline := time.Now().Add(2 * time.Second); len(acq) == 0 && time.Now().Before(deadline); {
		acq = fp.Notes()
	}
	if len(acq) != 1 || acq[0].Kind != dataplane.NoteAcquire || acq[0].Reqid != 62 || acq[0].Src != h16 || acq[0].Dst != h26 {
		t.Fatalf("IPv6 acquire not noted: %+v", acq)
	}
	for _, id := range []model.SAID{out6, in6} {
		if err := fp.DelSA(id); err != nil {
			t.Fatal(err)
		}
	}

	// B. 6in4 over plain ESP (protocol 50): IPv4 outer, IPv6 inner
	tun4 := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x6401, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 64,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, ReplayWindow: 32}
	out64, in64 := e.addPair(tun4, key)
	if err := fp.SetPolicies([]dataplane.Binding{
		{Policy: pol(sel66, model.DirOut, 64, model.ModeTunnel), SA: out64, HasSA: true},
		{Policy: pol(sel66, model.DirFwd, 64, model.ModeTunnel)},
	}); err != nil {
		t.Fatal(err)
	}
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(h16, h26, 1000, 2000, 64, []byte("six-in-four"))))
	esp = e.recv("6in4 encrypted", 0x0800, func(ip []byte) bool {
		return ip[9] == 50 && binary.BigEndian.Uint32(ip[20:]) == 0x6401
	})
	if csum(esp[14:34]) != 0 {
		t.Fatal("6in4: outer IPv4 checksum is wrong")
	}
	e.send(e.back(esp))
	e.recv("6in4 decrypted", 0x86dd, plain6("six-in-four"))
	for _, id := range []model.SAID{out64, in64} {
		if err := fp.DelSA(id); err != nil {
			t.Fatal(err)
		}
	}

	// C. transport mode for the gateway's own traffic, which the kernel
	// sends through the TAP; the policy covers everything between the
	// two hosts, yet IKE (UDP 500) and neighbour discovery pass in clear
	for _, c := range []struct {
		name      string
		gw, peer  netip.Addr
		spi       uint32
		prefixLen int
	}{
		{"IPv4", gwAddr, peerAddr, 0x7401, 24},
		{"IPv6", gw6, peer6, 0x7601, 64},
	} {
		trs := model.SA{SAID: model.SAID{Dst: c.peer, SPI: c.spi, Proto: model.ProtoESP}, Src: c.gw, Reqid: 70,
			Mode: model.ModeTransport, EncAlg: model.EncrAESGCM16, ReplayWindow: 32}
		outT, inT := e.addPair(trs, key)
		host := sel(netip.PrefixFrom(c.gw, c.gw.BitLen()).String(), netip.PrefixFrom(c.peer, c.peer.BitLen()).String())
		rev := sel(netip.PrefixFrom(c.peer, c.peer.BitLen()).String(), netip.PrefixFrom(c.gw, c.gw.BitLen()).String())
		if err := fp.SetPolicies([]dataplane.Binding{
			{Policy: pol(host, model.DirOut, 70, model.ModeTransport), SA: outT, HasSA: true},
			{Policy: pol(rev, model.DirIn, 70, model.ModeTransport)},
		}); err != nil {
			t.Fatal(err)
		}
		etype := uint16(0x0800)
		if c.gw.Is6() {
			etype = 0x86dd
		}
		// the kernel side: our address on the TAP, the peer's MAC known
		tapUp(t, "tpa", netip.PrefixFrom(c.gw, c.prefixLen), c.peer, vb.HardwareAddr)

		// C1. a datagram from the gateway's own socket leaves as ESP
		// (protocol 50) with the gateway's and the peer's addresses
		// and nothing else in front
		conn := udpFrom(t, c.gw, 0)
		if _, err := conn.WriteToUDPAddrPort([]byte("transport-"+c.name), netip.AddrPortFrom(c.peer, 9)); err != nil {
			t.Fatal(err)
		}
		espT := e.recv("transport ESP "+c.name, etype, func(ip []byte) bool {
			if c.gw.Is6() {
				return ip[6] == 50 && bytes.Equal(ip[8:24], c.gw.AsSlice()) && binary.BigEndian.Uint32(ip[40:]) == c.spi
			}
			return ip[9] == 50 && bytes.Equal(ip[12:16], c.gw.AsSlice()) && binary.BigEndian.Uint32(ip[20:]) == c.spi
		})
		if bytes.Contains(espT, []byte("transport-")) {
			t.Fatalf("transport %s: plaintext visible", c.name)
		}
		if !c.gw.Is6() && csum(espT[14:34]) != 0 {
			t.Fatalf("transport %s: IPv4 header checksum is wrong", c.name)
		}
		// C2. the same ESP, its addresses turned round (the ESP header
		// does not cover them), is the peer's answer: decrypted, it
		// reaches the gateway's socket through the TAP
		answer := e.back(espT)
		if c.gw.Is6() {
			copy(answer[14+8:], c.peer.AsSlice())
			copy(answer[14+24:], c.gw.AsSlice())
		} else {
			copy(answer[14+12:], c.peer.AsSlice())
			copy(answer[14+16:], c.gw.AsSlice())
			binary.BigEndian.PutUint16(answer[14+10:], 0)
			binary.BigEndian.PutUint16(answer[14+10:], csum(answer[14:34]))
		}
		// the inner UDP header still says port 9: send it to the socket
		// bound there
		sink := udpFrom(t, c.gw, 9)
		e.send(answer)
		buf := make([]byte, 256)
		_ = sink.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := sink.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "transport-"+c.name || from.Addr() != c.peer {
			st, _ := fp.SAStats(inT)
			t.Fatalf("transport %s: socket got %q from %v: %v (inbound SA %+v; counters %v; answer % x)",
				c.name, buf[:n], from, err, st, e.counters(), answer)
		}
		// C3. IKE from the gateway's port 500 is not protected
		ike := udpFrom(t, c.gw, 500)
		if _, err := ike.WriteToUDPAddrPort([]byte("ike-"+c.name), netip.AddrPortFrom(c.peer, 500)); err != nil {
			t.Fatal(err)
		}
		e.recv("IKE in clear "+c.name, etype, func(ip []byte) bool { return bytes.HasSuffix(ip, []byte("ike-"+c.name)) })
		if st, _ := fp.SAStats(inT); st.Packets != 1 {
			t.Fatalf("transport %s inbound SA: %d packets, want 1", c.name, st.Packets)
		}
		for _, x := range []*net.UDPConn{conn, sink, ike} {
			x.Close()
		}
		for _, id := range []model.SAID{outT, inT} {
			if err := fp.DelSA(id); err != nil {
				t.Fatal(err)
			}
		}
	}

	// D. transport mode with UDP encapsulation is refused clearly
	bad := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x7777, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 77,
		Mode: model.ModeTransport, EncAlg: model.EncrAESGCM16, EncKey: append(model.Key(nil), key...), Encap: true, SrcPort: 4500, DstPort: 4500}
	if err := fp.AddSA(&bad); err == nil || !strings.Contains(err.Error(), "transport mode with UDP encapsulation") {
		t.Fatalf("transport + UDP encapsulation: %v", err)
	}
	if err := fp.SetPolicies(nil); err != nil {
		t.Fatal(err)
	}
}

// tapUp gives the TAP an address and a permanent neighbour for the peer.
func tapUp(t *testing.T, tap string, addr netip.Prefix, peer netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	for _, args := range [][]string{
		{"link", "set", tap, "up"},
		{"addr", "replace", addr.String(), "dev", tap, "nodad"},
		{"neigh", "replace", peer.String(), "lladdr", mac.String(), "dev", tap, "nud", "permanent"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// udpFrom opens a UDP socket on addr:port (0: any port), retrying while a
// fresh IPv6 address is still being set up.
func udpFrom(t *testing.T, addr netip.Addr, port uint16) *net.UDPConn {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen udp %s:%d: %v", addr, port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recvType returns the first incoming frame of ethertype etype whose IP
// packet match accepts.
func recvType(fd int, timeout time.Duration, etype uint16, match func(ip []byte) bool) ([]byte, error) {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, from, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == 4 /* PACKET_OUTGOING */ {
			continue
		}
		f := buf[:n]
		if n < 14+20 || binary.BigEndian.Uint16(f[12:]) != etype {
			continue
		}
		if match(f[14:]) {
			return append([]byte(nil), f...), nil
		}
	}
	return nil, errors.New("no matching frame")
}

func frame6(dst, src net.HardwareAddr, ip []byte) []byte {
	f := frame(dst, src, ip)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	return f
}

func ipv6udp(src, dst netip.Addr, sport, dport uint16, hop byte, payload []byte) []byte {
	p := make([]byte, 48+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(payload)))
	p[6] = 17
	p[7] = hop
	copy(p[8:], src.AsSlice())
	copy(p[24:], dst.AsSlice())
	binary.BigEndian.PutUint16(p[40:], sport)
	binary.BigEndian.PutUint16(p[42:], dport)
	binary.BigEndian.PutUint16(p[44:], uint16(8+len(payload)))
	copy(p[48:], payload)
	binary.BigEndian.PutUint16(p[46:], l6csum(p))
	return p
}

// l6csum is the upper-layer checksum of an IPv6 packet without extension
// headers (0 when the packet's checksum is right).
func l6csum(ip []byte) uint16 {
	pl := binary.BigEndian.Uint16(ip[4:])
	ph := make([]byte, 0, 40+int(pl))
	ph = append(ph, ip[8:40]...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(pl))
	ph = append(ph, 0, 0, 0, ip[6])
	ph = append(ph, ip[40:40+int(pl)]...)
	if len(ph)%2 == 1 {
		ph = append(ph, 0)
	}
	return csum(ph)
}

// insertExt6 puts an extension header of type typ (8*(units+1) bytes)
// right behind the IPv6 header of frame f.
func insertExt6(f []byte, typ byte, units byte) []byte {
	ip := f[14:]
	ext := make([]byte, 8*(int(units)+1))
	ext[0] = ip[6]
	ext[1] = units
	ext[2] = 1 // PadN option filling the rest
	ext[3] = byte(len(ext) - 4)
	g := append(append(append([]byte(nil), f[:14+40]...), ext...), ip[40:]...)
	g[14+6] = typ
	binary.BigEndian.PutUint16(g[14+4:], binary.BigEndian.Uint16(ip[4:])+uint16(len(ext)))
	return g
}
