package fastpath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/kernel"
	"github.com/swanpath/swanpath/bridge/model"
)

// edgeCases checks what the fast path lets past its policies, in the
// child process of TestFastpathRoundTrip (issue 18, "fail closed"):
//
//	A. closed: plaintext, ESP and ESP-in-UDP are dropped (drop_closed);
//	   ARP, neighbour discovery and IKE of the gateway's own address pass
//	   both ways (the kernel answers through the gate); reopened, traffic
//	   is protected again
//	B. IKE bypass: local port and own address, the remote port free; IKE
//	   ports to an address a local route covers but that is not the
//	   gateway's own are under policy (encrypted)
//	C. neighbour discovery with hop limit 64 is under policy
//	D. NAT-T to a transit address is UDP under policy, not ESP-in-UDP
//	E. plaintext from the wire with a source the FIB does not route out of
//	   that port, which an outbound policy would protect: drop_spoof
//	F. no ICMP errors about multicast destinations, non-host sources or
//	   ICMP errors; the rest at most 100/s after a burst of 10
//	G. path MTU from ICMP: "fragmentation needed" to the gateway quoting
//	   its ESP-in-UDP (SPI, addresses, ports) lowers the SA's MTU; the
//	   next DF packet too big gets ICMP with that MTU less the overhead;
//	   never below 576; a wrong SPI or port, an MTU not below the quoted
//	   length, a quote without the SPI, or one to another address teaches
//	   nothing (pmtu_ignored)
//
// Only gwAddr and gw6 are the gateway's own here (not the peer's).
func edgeCases(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) {
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	fib := wireFIB(vb, gwAddr, gw6)
	setFIB := func(f dataplane.FIB) {
		t.Helper()
		if err := fp.SetFIB(f); err != nil {
			t.Fatal(err)
		}
	}
	setFIB(fib)
	// the kernel must not see the wire's frames itself (it would answer
	// ARP, neighbour solicitations and IKE next to the fast path), as
	// swanpathd keeps it off its ports
	if err := kernel.Isolate("va"); err != nil {
		t.Fatal(err)
	}
	tun := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x8001, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 80,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500, ReplayWindow: 32}
	out, in := e.addPair(tun, key)
	defer func() {
		fp.SetClosed(false)
		e.delSAs(out, in)
		_ = fp.SetPolicies(nil)
	}()
	pol := func(src, dst string, d model.Dir) dataplane.Binding {
		b := dataplane.Binding{Policy: &model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{
			Src: netip.MustParsePrefix(src), Dst: netip.MustParsePrefix(dst)}, Dir: d}, Reqid: 80, Mode: model.ModeTunnel}}
		if d == model.DirOut {
			b.SA, b.HasSA = out, true
		}
		return b
	}
	lanPolicies := []dataplane.Binding{
		pol("10.1.0.0/24", "10.2.0.0/24", model.DirOut),
		pol("10.2.0.0/24", "10.1.0.0/24", model.DirFwd),
		// the peer's and the gateway's own traffic must be protected
		pol(netip.PrefixFrom(peerAddr, 32).String(), netip.PrefixFrom(gwAddr, 32).String(), model.DirIn),
		pol(netip.PrefixFrom(peer6, 128).String(), netip.PrefixFrom(gw6, 128).String(), model.DirIn),
	}
	if err := fp.SetPolicies(lanPolicies); err != nil {
		t.Fatal(err)
	}
	tapUp(t, "tpa", netip.PrefixFrom(gwAddr, 24), peerAddr, vb.HardwareAddr)
	tapUp(t, "tpa", netip.PrefixFrom(gw6, 64), peer6, vb.HardwareAddr)
	isOurESP := func(ip []byte) bool {
		return ip[9] == 17 && binary.BigEndian.Uint16(ip[22:]) == 4500 && binary.BigEndian.Uint32(ip[28:]) == 0x8001
	}
	plain := func(payload string) []byte {
		return frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, []byte(payload)))
	}
	// received by a socket of the gateway's, from the peer
	gotOn := func(c *net.UDPConn, what, want string) {
		t.Helper()
		buf := make([]byte, 256)
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || !bytes.HasSuffix(buf[:n], []byte(want)) || from.Addr() != peerAddr {
			t.Fatalf("%s: socket got %q from %v: %v (counters %v)", what, buf[:n], from, err, e.counters())
		}
	}
	ike := udpFrom(t, gwAddr, 500)
	natt := udpFrom(t, gwAddr, 4500)
	defer ike.Close()
	defer natt.Close()
	settle(wire)

	// A. closed
	fp.SetClosed(true)
	before := e.counters()
	e.send(plain("closed-plain"))
	esp := ipv4udp(peerAddr, gwAddr, 4500, 4500, 64, []byte("\x00\x00\x80\x01\x00\x00\x00\x01esp-in-udp-junk!"))
	e.send(frame(portMAC, vb.HardwareAddr, esp))
	raw := ipv4udp(peerAddr, gwAddr, 0x8001, 0, 64, []byte("\x00\x00\x00\x01plain-esp-junk!!"))
	raw[9] = 50
	fixsum4(raw)
	e.send(frame(portMAC, vb.HardwareAddr, raw))
	e.wait("drop_closed", before["drop_closed"]+3)
	// ARP: the kernel's answer comes back out through the gate
	e.send(arpRequest(vb.HardwareAddr, peerAddr, gwAddr))
	if _, err := recvType(wire, 3*time.Second, 0x0806, func(a []byte) bool {
		return binary.BigEndian.Uint16(a[6:]) == 2 && bytes.Equal(a[14:18], gwAddr.AsSlice())
	}); err != nil {
		t.Fatalf("closed: no ARP reply for %s: %v (counters %v)", gwAddr, err, e.counters())
	}
	// neighbour discovery, from a link-local address to the solicited-node
	// group: the kernel's advertisement comes back out
	ll := netip.MustParseAddr("fe80::2")
	sn := netip.MustParseAddr("ff02::1:ff00:1") // of fd00:192::1
	e.send(frame6(net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 1}, vb.HardwareAddr, ns6(ll, sn, gw6, vb.HardwareAddr, 255)))
	isNA := func(dst netip.Addr) func(ip []byte) bool {
		return func(ip []byte) bool {
			return len(ip) >= 64 && ip[6] == 58 && ip[40] == 136 && bytes.Equal(ip[24:40], dst.AsSlice()) &&
				bytes.Equal(ip[48:64], gw6.AsSlice())
		}
	}
	e.recv("closed: neighbour advertisement for "+gw6.String(), 0x86dd, isNA(ll))
	// IKE to the gateway's address, on 500 and behind the non-ESP marker
	// on 4500 (from a NAT's port), reaches charon's sockets; IKE from them
	// goes out
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(peerAddr, gwAddr, 500, 500, 64, []byte("ike-closed"))))
	gotOn(ike, "closed: IKE to port 500", "ike-closed")
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(peerAddr, gwAddr, 31000, 4500, 64, []byte("\x00\x00\x00\x00ike-natt-closed"))))
	gotOn(natt, "closed: NAT-T IKE to port 4500", "ike-natt-closed")
	if _, err := ike.WriteToUDPAddrPort([]byte("ike-out-closed"), netip.AddrPortFrom(peerAddr, 500)); err != nil {
		t.Fatal(err)
	}
	e.recv("closed: IKE from the gateway", 0x0800, func(ip []byte) bool { return bytes.HasSuffix(ip, []byte("ike-out-closed")) })
	if now := e.counters(); now["esp_out"] != before["esp_out"] || now["esp_in"] != before["esp_in"] ||
		now["drop_unknown_spi"] != before["drop_unknown_spi"] || now["spi_held"] != before["spi_held"] {
		t.Fatalf("closed, yet ESP handled: esp_out %d -> %d, esp_in %d -> %d, drop_unknown_spi %d -> %d, spi_held %d -> %d",
			before["esp_out"], now["esp_out"], before["esp_in"], now["esp_in"],
			before["drop_unknown_spi"], now["drop_unknown_spi"], before["spi_held"], now["spi_held"])
	}
	fp.SetClosed(false)
	e.send(plain("reopened"))
	e.recv("reopened: plaintext protected again", 0x0800, isOurESP)

	// B. IKE: the local port counts, the remote one is free (NAT) ...
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(peerAddr, gwAddr, 1234, 500, 64, []byte("ike-from-nat"))))
	gotOn(ike, "IKE from a NAT's port", "ike-from-nat")
	// ... a non-IKE local port is under policy (peer -> gateway must be
	// protected: dropped)
	d0 := e.counters()["drop_policy"]
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(peerAddr, gwAddr, 500, 1234, 64, []byte("not-ike"))))
	e.wait("drop_policy", d0+1)
	// ... and IKE ports to an address a local route covers (a LAN behind
	// an interface the fast path does not own) are not the gateway's IKE:
	// the policy protects them
	wide := fib
	wide.Routes = append(append([]dataplane.Route(nil), fib.Routes...),
		dataplane.Route{Dst: netip.MustParsePrefix("10.2.0.0/24"), Local: true})
	setFIB(wide)
	settle(wire)
	st0, _ := fp.SAStats(out)
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 500, 500, 64, []byte("ike-ports-transit"))))
	f := e.recv("IKE ports to a locally routed, not own, address: encrypted", 0x0800, isOurESP)
	if st, _ := fp.SAStats(out); st.Packets != st0.Packets+1 {
		t.Fatalf("IKE ports to a locally routed address: SA packets %d -> %d (frame % x)", st0.Packets, st.Packets, f[:48])
	}
	setFIB(fib)

	// C. neighbour discovery that was forwarded (hop limit 64) is not
	// neighbour discovery: peer -> gateway must be protected, dropped;
	// with hop limit 255 the same solicitation reaches the kernel, whose
	// advertisement goes out
	d0 = e.counters()["drop_policy"]
	e.send(frame6(portMAC, vb.HardwareAddr, ns6(peer6, gw6, gw6, vb.HardwareAddr, 64)))
	e.wait("drop_policy", d0+1)
	e.send(frame6(portMAC, vb.HardwareAddr, ns6(peer6, gw6, gw6, vb.HardwareAddr, 255)))
	e.recv("neighbour advertisement to a global solicitation", 0x86dd, isNA(peer6))
	if now := e.counters()["drop_policy"]; now != d0+1 {
		t.Fatalf("drop_policy %d -> %d: hop limit 255 solicitation dropped", d0, now)
	}

	// D. NAT-T between two LAN hosts, not to us: UDP under policy
	// (encrypted), not ESP-in-UDP (which would be an unknown SPI here)
	c0 := e.counters()
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 4500, 4500, 64, []byte("\x00\x00\x90\x01\x00\x00\x00\x01transit-natt"))))
	e.recv("transit NAT-T: encrypted by policy", 0x0800, isOurESP)
	if now := e.counters(); now["drop_unknown_spi"] != c0["drop_unknown_spi"] || now["spi_held"] != c0["spi_held"] {
		t.Fatalf("transit NAT-T taken as ESP-in-UDP: drop_unknown_spi %d -> %d, spi_held %d -> %d",
			c0["drop_unknown_spi"], now["drop_unknown_spi"], c0["spi_held"], now["spi_held"])
	}

	// E. our protected LAN behind another interface (a local route), yet
	// its source arrives on this port: not encrypted, drop_spoof
	spoof := fib
	spoof.Routes = append(append([]dataplane.Route(nil), fib.Routes...),
		dataplane.Route{Dst: netip.MustParsePrefix("10.1.0.0/24"), Local: true})
	setFIB(spoof)
	s0 := e.counters()
	e.send(plain("spoofed"))
	e.wait("drop_spoof", s0["drop_spoof"]+1)
	if now := e.counters()["esp_out"]; now != s0["esp_out"] {
		t.Fatalf("spoofed source encrypted: esp_out %d -> %d", s0["esp_out"], now)
	}
	setFIB(fib)
	e.send(plain("not-spoofed"))
	e.recv("the same source routed out of this port: encrypted", 0x0800, isOurESP)

	// F. ICMP errors: everything protected, every packet too big
	if err := fp.SetPolicies([]dataplane.Binding{
		pol("0.0.0.0/0", "0.0.0.0/0", model.DirOut),
		pol("::/0", "::/0", model.DirOut),
	}); err != nil {
		t.Fatal(err)
	}
	big4 := func(src, dst netip.Addr, icmpType int) []byte {
		ip := ipv4udp(src, dst, 1000, 2000, 64, make([]byte, 1500-28))
		ip[6] = 0x40 // DF
		if icmpType >= 0 {
			ip[9], ip[20], ip[21] = 1, byte(icmpType), 0
		}
		fixsum4(ip)
		return frame(portMAC, vb.HardwareAddr, ip)
	}
	big6 := func(src, dst netip.Addr, icmpType int) []byte {
		ip := ipv6udp(src, dst, 1000, 2000, 64, make([]byte, 1500-48))
		if icmpType >= 0 {
			ip[6], ip[40], ip[41] = 58, byte(icmpType), 0
		}
		return frame6(portMAC, vb.HardwareAddr, ip)
	}
	f0 := e.counters()
	for _, f := range [][]byte{
		big4(h1, netip.MustParseAddr("224.1.2.3"), -1),       // multicast
		big4(h1, netip.MustParseAddr("255.255.255.255"), -1), // broadcast
		big4(netip.MustParseAddr("0.0.0.0"), h2, -1),         // not a host
		big4(netip.MustParseAddr("240.0.0.1"), h2, -1),       // class E
		big4(h1, h2, 3), // an ICMP error
		big4(h1, h2, 11),
		big6(h16, netip.MustParseAddr("ff0e::1"), -1), // multicast
		big6(h16, h26, 1), // an ICMPv6 error
	} {
		e.send(f)
	}
	e.wait("drop_mtu", f0["drop_mtu"]+8)
	if now := e.counters(); now["icmp_mtu"] != f0["icmp_mtu"] || now["icmp_limited"] != f0["icmp_limited"] {
		t.Fatalf("ICMP errors about multicast, non-host sources or ICMP errors: icmp_mtu %d -> %d, icmp_limited %d -> %d",
			f0["icmp_mtu"], now["icmp_mtu"], f0["icmp_limited"], now["icmp_limited"])
	}
	// a flood: at most the burst and what the rate adds meanwhile
	const flood = 40
	l0 := e.counters()
	start := time.Now()
	for i := range flood {
		e.send(big4(h1, h2, -1))
		if i%10 == 9 {
			time.Sleep(time.Millisecond) // the veth queue is short
		}
	}
	var sent, limited uint64
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
		now := e.counters()
		sent, limited = now["icmp_mtu"]-l0["icmp_mtu"], now["icmp_limited"]-l0["icmp_limited"]
		if sent+limited >= flood {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flood of %d: %d ICMP errors sent, %d limited (counters %v)", flood, sent, limited, now)
		}
	}
	elapsed := time.Since(start)
	if most := 10 + uint64(elapsed.Seconds()*100) + 1; sent > most || limited == 0 {
		t.Fatalf("flood of %d in %v: %d ICMP errors sent (at most %d), %d limited", flood, elapsed, sent, most, limited)
	}
	t.Logf("ICMP flood of %d in %v: %d sent, %d limited", flood, elapsed, sent, limited)
	// the bucket refills: errors go out again
	settle(wire)
	isFragNeeded := func(ip []byte) bool { return ip[9] == 1 && ip[20] == 3 && ip[21] == 4 }
	for deadline := time.Now().Add(3 * time.Second); ; {
		e.send(big4(h1, h2, -1))
		if _, err := recvMatch(wire, 50*time.Millisecond, isFragNeeded); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ICMP error after the flood (counters %v)", e.counters())
		}
	}
	settle(wire)

	// G. path MTU from ICMP about our ESP-in-UDP (SPI 0x8001, 4500 ->
	// 4500, gwAddr -> peerAddr)
	fragNeeded := func(to netip.Addr, spi uint32, dport uint16, mtu uint16, qlen int, quote int) []byte {
		q := ipv4udp(gwAddr, peerAddr, 4500, dport, 64, make([]byte, 8+8))
		binary.BigEndian.PutUint16(q[2:], uint16(qlen))
		binary.BigEndian.PutUint32(q[28:], spi)
		fixsum4(q)
		icmp := append([]byte{3, 4, 0, 0, 0, 0, byte(mtu >> 8), byte(mtu)}, q[:quote]...)
		ip := ipv4udp(peerAddr, to, 0, 0, 64, make([]byte, len(icmp)-8))
		ip[9] = 1
		copy(ip[20:], icmp)
		fixsum4(ip)
		return frame(portMAC, vb.HardwareAddr, ip)
	}
	// the MTU the next 1500-byte DF packet is told, retried while the
	// ICMP errors' bucket refills
	toldMTU := func() uint16 {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); ; {
			e.send(big4(h1, h2, -1))
			if f, err := recvMatch(wire, 50*time.Millisecond, isFragNeeded); err == nil {
				return binary.BigEndian.Uint16(f[14+26:]) // the frame's ICMP next-hop MTU
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ICMP error for a packet too big (counters %v)", e.counters())
			}
		}
	}
	if got := toldMTU(); got != 1438 {
		t.Fatalf("before any path MTU: told %d, want 1438 (1500 less 60, rounded to 4, less the trailer's 2)", got)
	}
	g0 := e.counters()
	for _, f := range [][]byte{
		fragNeeded(gwAddr, 0x8002, 4500, 1000, 1500, 36),                            // another SPI
		fragNeeded(gwAddr, 0x8001, 4501, 1000, 1500, 36),                            // another port
		fragNeeded(gwAddr, 0x8001, 4500, 1500, 1500, 36),                            // the packet fitted
		fragNeeded(gwAddr, 0x8001, 4500, 1000, 1500, 28),                            // no SPI quoted
		fragNeeded(netip.MustParseAddr("192.0.2.77"), 0x8001, 4500, 1000, 1500, 36), // not to us
	} {
		e.send(f)
	}
	e.wait("pmtu_ignored", g0["pmtu_ignored"]+5)
	if got := toldMTU(); got != 1438 || e.counters()["pmtu_learned"] != g0["pmtu_learned"] {
		t.Fatalf("ICMP not about our SA taught a path MTU: told %d (counters %v)", got, e.counters())
	}
	e.send(fragNeeded(gwAddr, 0x8001, 4500, 1000, 1500, 36))
	e.wait("pmtu_learned", g0["pmtu_learned"]+1)
	if got := toldMTU(); got != 938 {
		t.Fatalf("path MTU 1000 learned: told %d, want 938", got)
	}
	e.send(fragNeeded(gwAddr, 0x8001, 4500, 300, 1500, 36))
	e.wait("pmtu_learned", g0["pmtu_learned"]+2)
	if got := toldMTU(); got != 514 {
		t.Fatalf("path MTU 300 reported: told %d, want 514 (576 at least, less the overhead)", got)
	}
	settle(wire)
}

// fixsum4 recomputes an IPv4 header's checksum.
func fixsum4(ip []byte) {
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], csum(ip[:20]))
}

// arpRequest is a broadcast ARP request from mac/sip for tip.
func arpRequest(mac net.HardwareAddr, sip, tip netip.Addr) []byte {
	f := make([]byte, 42)
	copy(f[0:6], net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1) // request
	copy(a[8:], mac)
	copy(a[14:], sip.AsSlice())
	copy(a[24:], tip.AsSlice())
	return f
}

// ns6 is an IPv6 neighbour solicitation (RFC 4861 §4.3) for target, with
// mac as its source link-layer address option.
func ns6(src, dst, target netip.Addr, mac net.HardwareAddr, hop byte) []byte {
	icmp := make([]byte, 32)
	icmp[0] = 135
	copy(icmp[8:], target.AsSlice())
	icmp[24], icmp[25] = 1, 1 // source link-layer address, 8 bytes
	copy(icmp[26:], mac)
	p := make([]byte, 40+len(icmp))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(len(icmp)))
	p[6], p[7] = 58, hop
	copy(p[8:], src.AsSlice())
	copy(p[24:], dst.AsSlice())
	copy(p[40:], icmp)
	binary.BigEndian.PutUint16(p[42:], l6csum(p))
	return p
}
