package fastpath

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// Route-based interfaces (dp_ifc.h): one port (a veth end, as in
// TestFastpathRoundTrip) and one interface sp0 with if_id 20. What the
// kernel routes into sp0 leaves encrypted with the interface's SA; that ESP
// turned around decrypts and comes out of sp0; the interface's 0.0.0.0/0
// policy does not capture plaintext arriving on the port; without a policy
// the interface drops; SAs and policies for an if_id or mark no interface
// has are refused; SAs without a mark under marked policies (libreswan's
// VTI) follow their policies' interface.

const ifcEnv = "SWANPATH_FASTPATH_IFC"

func TestRouteBasedInterface(t *testing.T) {
	runChild(t, "fpi", "TestRouteBasedInterfaceChild", ifcEnv, "", true)
}

func TestRouteBasedInterfaceChild(t *testing.T) {
	ns := childArg(t, ifcEnv, "TestRouteBasedInterface")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fp, err := Open(Config{
		EALArgs:    childEAL(ns, "-l", "0,1"),
		Ports:      []PortConfig{{Name: "a", Device: "net_af_packet0,iface=va", Tap: "tpa"}},
		Interfaces: []InterfaceConfig{{Name: "sp0", IfID: 20, MTU: 1400, MSSClamp: MSSClampPMTU}, {Name: "sp1", Mark: 21}},
		IdleSleep:  10 * time.Microsecond,
		MaxSAs:     256,
		Log:        log,
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
	sp0, err := net.InterfaceByName("sp0")
	if err != nil {
		t.Fatalf("route-based interface sp0 not created: %v", err)
	}
	if sp0.MTU != 1400 || sp0.Flags&net.FlagPointToPoint == 0 || sp0.HardwareAddr != nil {
		t.Fatalf("sp0: mtu %d flags %v hw %v: want MTU 1400, point-to-point, no link-layer address", sp0.MTU, sp0.Flags, sp0.HardwareAddr)
	}
	wire := openRaw(t, vb.Index)
	defer syscall.Close(wire)
	tun := openRaw(t, sp0.Index)
	defer syscall.Close(tun)
	portMAC := fp.Ports()[0].MAC
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("link", "set", "sp0", "up")
	ip("link", "set", "sp1", "up")
	ip("addr", "add", "10.9.0.1/32", "dev", "sp0")
	ip("-6", "addr", "add", "2001:db8:9::1/128", "dev", "sp0", "nodad")
	ip("route", "add", "10.2.0.0/24", "dev", "sp0")
	ip("-6", "route", "add", "2001:db8:2::/64", "dev", "sp0")

	key := make(model.Key, 20)
	_, _ = rand.Read(key)
	const spi = 0x2001
	mk := func(inbound bool, ifID uint32) *model.SA {
		sa := &model.SA{SAID: model.SAID{Dst: peerAddr, SPI: spi, Proto: model.ProtoESP}, Src: gwAddr, IfID: ifID,
			Reqid: 7, Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, EncKey: append(model.Key(nil), key...),
			ReplayWindow: 32, Inbound: inbound}
		if inbound {
			sa.Dst, sa.Src = gwAddr, peerAddr
		}
		return sa
	}
	out, in := mk(false, 20), mk(true, 20)
	outID := out.SAID
	for _, sa := range []*model.SA{out, in} {
		if err := fp.AddSA(sa); err != nil {
			t.Fatal(err)
		}
	}
	any4 := model.Selector{Src: netip.MustParsePrefix("0.0.0.0/0"), Dst: netip.MustParsePrefix("0.0.0.0/0")}
	any6 := model.Selector{Src: netip.MustParsePrefix("::/0"), Dst: netip.MustParsePrefix("::/0")}
	pol := func(sel model.Selector, d model.Dir, ifID uint32) *model.Policy {
		return &model.Policy{PolicyID: model.PolicyID{Sel: sel, Dir: d, IfID: ifID}, Reqid: 7, Mode: model.ModeTunnel}
	}
	// a policy-based pair too, so that the ports' SPD is not empty
	other := model.Selector{Src: netip.MustParsePrefix("10.5.0.0/24"), Dst: netip.MustParsePrefix("10.6.0.0/24")}
	binds := []dataplane.Binding{
		{Policy: pol(any4, model.DirOut, 20), SA: outID, HasSA: true}, {Policy: pol(any4, model.DirIn, 20)},
		{Policy: pol(any6, model.DirOut, 20), SA: outID, HasSA: true}, {Policy: pol(any6, model.DirIn, 20)},
		{Policy: pol(other, model.DirOut, 0)}, {Policy: pol(other, model.DirFwd, 0)},
	}
	if err := fp.SetPolicies(binds); err != nil {
		t.Fatal(err)
	}
	if err := fp.SetFIB(wireFIB(vb, gwAddr, peerAddr)); err != nil {
		t.Fatal(err)
	}
	settle(wire)
	settle(tun)
	ifcStats := func() map[string]uint64 {
		for _, s := range fp.PortStats() {
			if s.Name == "sp0" {
				return s.Counters
			}
		}
		t.Fatal("no counters for sp0 in PortStats")
		return nil
	}
	isESPOf := func(spi, seq uint32) func([]byte) bool {
		return func(ip []byte) bool {
			return ip[9] == 50 && binary.BigEndian.Uint32(ip[20:]) == spi && binary.BigEndian.Uint32(ip[24:]) == seq
		}
	}
	isESP := func(seq uint32) func([]byte) bool { return isESPOf(spi, seq) }
	h := netip.MustParseAddr("10.2.0.10")
	send := func(dst netip.Addr, payload string) {
		t.Helper()
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 2000)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
	}

	// 1. routed into sp0 by the kernel -> ESP with the interface's SA
	send(h, "routed-1")
	esp, err := recvMatch(wire, 3*time.Second, isESP(1))
	if err != nil {
		t.Fatalf("no ESP for what the kernel routed into sp0: %v (sp0 %v, port %v)", err, ifcStats(), fp.PortStats()[0].Counters)
	}
	if !bytes.Equal(esp[14+12:14+16], gwAddr.AsSlice()) || !bytes.Equal(esp[14+16:14+20], peerAddr.AsSlice()) ||
		bytes.Contains(esp, []byte("routed-1")) {
		t.Fatalf("bad ESP frame: % x", esp)
	}
	if s := ifcStats(); s["tap_rx"] < 1 {
		t.Fatalf("sp0 counters %v: want tap_rx", s)
	}

	// 2. that ESP back in, as if from the peer: decrypted, out of sp0
	back := append([]byte(nil), esp...)
	copy(back[0:6], portMAC)
	copy(back[6:12], vb.HardwareAddr)
	if err := syscall.Sendto(wire, back, 0, &syscall.SockaddrLinklayer{Ifindex: vb.Index}); err != nil {
		t.Fatal(err)
	}
	got, err := recvIP(tun, 3*time.Second, func(p []byte) bool { return bytes.HasSuffix(p, []byte("routed-1")) })
	if err != nil {
		t.Fatalf("decrypted packet not out of sp0: %v (sp0 %v, port %v)", err, ifcStats(), fp.PortStats()[0].Counters)
	}
	if !bytes.Equal(got[12:16], []byte{10, 9, 0, 1}) || !bytes.Equal(got[16:20], h.AsSlice()) {
		t.Fatalf("decrypted packet %v -> %v", got[12:16], got[16:20])
	}
	if st, _ := fp.SAStats(in.SAID); st.Packets != 1 {
		t.Fatalf("inbound route-based SA counted %d packets, want 1", st.Packets)
	}
	waitIfc(t, ifcStats, "tap_tx", 1)

	// 3. IPv6 routed into sp0: the same SA (::/0 policy) carries it
	send(netip.MustParseAddr("2001:db8:2::10"), "routed-6")
	if _, err := recvMatch(wire, 3*time.Second, isESP(2)); err != nil {
		t.Fatalf("no ESP for IPv6 routed into sp0: %v (sp0 %v)", err, ifcStats())
	}

	// 3b. TCP MSS: a SYN with MSS 1460 through sp0 (mss_clamp pmtu, MTU
	// 1400) leaves and comes back clamped to 1360, its checksum right;
	// through sp1 (a mark, no clamping) it keeps 1460
	turn := func(f []byte) {
		t.Helper()
		g := append([]byte(nil), f...)
		copy(g[0:6], portMAC)
		copy(g[6:12], vb.HardwareAddr)
		if err := syscall.Sendto(wire, g, 0, &syscall.SockaddrLinklayer{Ifindex: vb.Index}); err != nil {
			t.Fatal(err)
		}
	}
	synThrough := func(ifc *net.Interface, fd int, espSPI, seq uint32, dport uint16) []byte {
		t.Helper()
		syn := tcpSYN(netip.MustParseAddr("10.9.0.1"), h, 40000, dport, 1460)
		if err := syscall.Sendto(fd, syn, 0, &syscall.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: htons(0x0800)}); err != nil {
			t.Fatal(err)
		}
		esp, err := recvMatch(wire, 3*time.Second, isESPOf(espSPI, seq))
		if err != nil {
			t.Fatalf("no ESP for the SYN through %s: %v (counters %v)", ifc.Name, err, fp.PortStats())
		}
		turn(esp)
		got, err := recvIP(fd, 3*time.Second, func(p []byte) bool {
			return p[9] == 6 && binary.BigEndian.Uint16(p[22:]) == dport
		})
		if err != nil {
			t.Fatalf("SYN not back out of %s: %v (counters %v)", ifc.Name, err, fp.PortStats())
		}
		if !tcpChecksumOK(got) {
			t.Fatalf("SYN out of %s: bad TCP checksum: % x", ifc.Name, got)
		}
		return got
	}
	if mss := binary.BigEndian.Uint16(synThrough(sp0, tun, spi, 3, 7001)[20+22:]); mss != 1360 {
		t.Fatalf("SYN through sp0: MSS %d, want 1360 (MTU 1400 - 40)", mss)
	}
	sp1, err := net.InterfaceByName("sp1")
	if err != nil {
		t.Fatal(err)
	}
	tun1 := openRaw(t, sp1.Index)
	defer syscall.Close(tun1)
	const spi1 = 0x2101
	for _, inbound := range []bool{false, true} {
		sa := mk(inbound, 0)
		sa.SPI, sa.Reqid, sa.Mark, sa.MarkMask = spi1, 8, 21, 0xffffffff
		if err := fp.AddSA(sa); err != nil {
			t.Fatal(err)
		}
		if !inbound {
			outID1 := sa.SAID
			for _, d := range []model.Dir{model.DirOut, model.DirIn} {
				p := pol(any4, d, 0)
				p.Reqid, p.Mark, p.MarkMask = 8, 21, 0xffffffff
				b := dataplane.Binding{Policy: p}
				if d == model.DirOut {
					b.SA, b.HasSA = outID1, true
				}
				if err := fp.SetPolicy(b); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	waitPublished(t, fp)
	if mss := binary.BigEndian.Uint16(synThrough(sp1, tun1, spi1, 1, 7002)[20+22:]); mss != 1460 {
		t.Fatalf("SYN through sp1 (no mss_clamp): MSS %d, want 1460 untouched", mss)
	}

	// 4. plaintext from the port that the interface's 0.0.0.0/0 policy
	// would match by selector: not the interface's to take -> the kernel
	p0 := fp.PortStats()[0].Counters
	f := frame(portMAC, vb.HardwareAddr, ipv4udp(netip.MustParseAddr("10.1.0.10"), h, 1000, 2000, 64, []byte("lan-1")))
	if err := syscall.Sendto(wire, f, 0, &syscall.SockaddrLinklayer{Ifindex: vb.Index}); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, fp, "tap_tx", p0["tap_tx"]+1)
	if p1 := fp.PortStats()[0].Counters; p1["esp_out"] != p0["esp_out"] || p1["drop_policy"] != p0["drop_policy"] {
		t.Fatalf("plaintext from the port was taken by the interface's policy: %v -> %v", p0, p1)
	}

	// 5. no policy on the interface: what is routed into it is dropped
	for _, b := range binds[:4] {
		if err := fp.DelPolicy(b.Policy.PolicyID); err != nil {
			t.Fatal(err)
		}
	}
	waitPublished(t, fp)
	s0 := ifcStats()
	send(h, "routed-nopolicy")
	waitIfc(t, ifcStats, "drop_policy", s0["drop_policy"]+1)

	// 6. an if_id or mark that no interface has is refused; a mark of
	// one is taken
	for _, c := range []struct {
		ifID, mark uint32
		ok         bool
	}{{99, 0, false}, {0, 22, false}, {0, 21, true}} {
		sa := mk(false, c.ifID)
		sa.SPI = 0x3000 + c.ifID + c.mark
		sa.Mark, sa.MarkMask = c.mark, 0
		if c.mark != 0 {
			sa.MarkMask = 0xffffffff
		}
		err := fp.AddSA(sa)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, model.ErrUnsupported)) {
			t.Errorf("AddSA if_id %d mark %d: %v, want ok=%v", c.ifID, c.mark, err, c.ok)
		}
		p := pol(any4, model.DirOut, c.ifID)
		p.Mark, p.MarkMask = sa.Mark, sa.MarkMask
		err = fp.SetPolicy(dataplane.Binding{Policy: p})
		if c.ok != (err == nil) {
			t.Errorf("SetPolicy if_id %d mark %d: %v, want ok=%v", c.ifID, c.mark, err, c.ok)
		}
	}

	// 7. libreswan's VTI: the policies carry the mark (sp1's), the SAs
	// none. The inbound SA takes the interface of its reqid's marked
	// policies, whether added before them (pluto's order) or after them
	// (a rekey's new SA); without them it is policy-based again.
	vti := func(spi uint32, inbound bool) *model.SA {
		sa := mk(inbound, 0)
		sa.SPI, sa.Reqid = spi, 10
		return sa
	}
	addPair := func(spi uint32) (out, in model.SAID) {
		t.Helper()
		for _, inbound := range []bool{true, false} {
			sa := vti(spi, inbound)
			if inbound {
				in = sa.SAID
			} else {
				out = sa.SAID
			}
			if err := fp.AddSA(sa); err != nil {
				t.Fatal(err)
			}
		}
		return out, in
	}
	const spiV, spiR = 0x2401, 0x2402
	outV, inV := addPair(spiV)
	vtiPol := func(d model.Dir) *model.Policy {
		p := pol(any4, d, 0)
		p.Reqid, p.Mark, p.MarkMask = 10, 21, 0xffffffff
		return p
	}
	outPol, inPol := vtiPol(model.DirOut), vtiPol(model.DirIn)
	for _, b := range []dataplane.Binding{{Policy: outPol, SA: outV, HasSA: true}, {Policy: inPol}} {
		if err := fp.SetPolicy(b); err != nil {
			t.Fatal(err)
		}
	}
	waitPublished(t, fp)
	synThrough(sp1, tun1, spiV, 1, 7003)
	if st, _ := fp.SAStats(inV); st.Packets != 1 || st.Interface != "sp1" {
		t.Fatalf("unmarked inbound SA under sp1's policies: %d packets, interface %q; want 1, sp1", st.Packets, st.Interface)
	}
	if st, _ := fp.SAStats(outV); st.Interface != "sp1" {
		t.Fatalf("unmarked outbound SA bound to sp1's policy: interface %q, want sp1", st.Interface)
	}
	outR, inR := addPair(spiR)
	if err := fp.Bind(outPol.PolicyID, outR, true); err != nil {
		t.Fatal(err)
	}
	synThrough(sp1, tun1, spiR, 1, 7004)
	// the inbound policy goes: ESP of the new SA decrypts, and the ports'
	// policies (none for it) drop it
	syn := tcpSYN(netip.MustParseAddr("10.9.0.1"), h, 40000, 7005, 1460)
	if err := syscall.Sendto(tun1, syn, 0, &syscall.SockaddrLinklayer{Ifindex: sp1.Index, Protocol: htons(0x0800)}); err != nil {
		t.Fatal(err)
	}
	esp2, err := recvMatch(wire, 3*time.Second, isESPOf(spiR, 2))
	if err != nil {
		t.Fatalf("no ESP for the second SYN through sp1: %v", err)
	}
	if err := fp.DelPolicy(inPol.PolicyID); err != nil {
		t.Fatal(err)
	}
	if st, _ := fp.SAStats(inR); st.Interface != "" {
		t.Fatalf("inbound SA without its reqid's marked policies still follows %q", st.Interface)
	}
	turn(esp2)
	deadline := time.Now().Add(3 * time.Second)
	for st, _ := fp.SAStats(inR); st.DropPolicy < 1; st, _ = fp.SAStats(inR) {
		if time.Now().After(deadline) {
			t.Fatalf("ESP of the policy-based SA again: %+v, want a policy drop", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recvIP returns the first packet arriving on a TUN device (raw IP,
// PACKET_HOST) that match accepts.
func recvIP(fd int, timeout time.Duration, match func(ip []byte) bool) ([]byte, error) {
	buf := make([]byte, 4096)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, from, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == 4 /* PACKET_OUTGOING */ {
			continue
		}
		if n >= 20 && match(buf[:n]) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
	return nil, errors.New("no matching packet")
}

func waitIfc(t *testing.T, stats func() map[string]uint64, name string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for stats()[name] < want {
		if time.Now().After(deadline) {
			t.Fatalf("interface counter %s = %d, want %d (all: %v)", name, stats()[name], want, stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPublished waits until the policy changes so far are in the tables
// the loop reads.
func waitPublished(t *testing.T, fp *Fastpath) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		fp.mu.Lock()
		pending := !fp.mu.rb.settledLocked()
		fp.mu.Unlock()
		if !pending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(fmt.Errorf("policy tables not rebuilt within 3s"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tcpSYN is an IPv4 TCP SYN with one option, MSS mss (at TCP offset 22).
func tcpSYN(src, dst netip.Addr, sport, dport, mss uint16) []byte {
	p := make([]byte, 20+24)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 6
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], csum(p[:20]))
	tc := p[20:]
	binary.BigEndian.PutUint16(tc[0:], sport)
	binary.BigEndian.PutUint16(tc[2:], dport)
	binary.BigEndian.PutUint32(tc[4:], 12345)
	tc[12] = 6 << 4 // 24 bytes
	tc[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tc[14:], 64240)
	tc[20], tc[21] = 2, 4
	binary.BigEndian.PutUint16(tc[22:], mss)
	binary.BigEndian.PutUint16(tc[16:], tcpSum(p))
	return p
}

// tcpSum is the TCP checksum of IPv4 packet p with its checksum field
// taken as it is (0 when computing it).
func tcpSum(p []byte) uint16 {
	hl := int(p[0]&0xf) * 4
	seg := p[hl:]
	ph := make([]byte, 12, 12+len(seg)+1)
	copy(ph[0:], p[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(seg)))
	return csum(append(ph, seg...))
}

// tcpChecksumOK says whether an IPv4 TCP packet's checksum is right.
func tcpChecksumOK(p []byte) bool { return tcpSum(p) == 0 }
