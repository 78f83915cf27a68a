package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// kernelRow is one row of the Linux-ESP interop matrix: the swanpath
// gateway against Debian's charon with kernel-netlink on a user-mode-Linux
// kernel (lab Options.KernelPeer), so the peer's ESP is Linux's own.
type kernelRow struct {
	name  string
	tun   lab.Tunnel
	xfrm  []string // in the peer kernel's `ip xfrm state`
	clear bool     // auth only: the payload is in clear
}

// TestKernelPeerESP: each row renegotiates the tunnel on one lab (the
// kernel host boots once), then h1 and h2 ping each other and send a paced
// UDP stream each way (every datagram must arrive once, intact); for
// transport mode the gateway and the peer ping each other's WAN address.
// The WAN, captured at both ends, must carry only IKE and ESP of the row's
// kind between the two WAN addresses: any plaintext (inner addresses on
// the wire, an echo in clear in transport mode) or ESP of the other kind
// fails the row; the peer kernel's XFRM states must show the row's
// algorithm (it is the kernel's ESP, not a fallback) and have counted the
// traffic.
func TestKernelPeerESP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	rows := []kernelRow{
		{name: "aes128gcm16-plain", tun: lab.Tunnel{ESPProposals: "aes128gcm16"}, xfrm: []string{"rfc4106(gcm(aes))"}},
		{name: "aes128gcm16-udp", tun: lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true}, xfrm: []string{"rfc4106(gcm(aes))", "encap type espinudp"}},
		{name: "aes256-sha256", tun: lab.Tunnel{ESPProposals: "aes256-sha256"}, xfrm: []string{"cbc(aes)", "hmac(sha256)"}},
		{name: "chacha20poly1305", tun: lab.Tunnel{ESPProposals: "chacha20poly1305"}, xfrm: []string{"rfc7539esp(chacha20,poly1305)"}},
		{name: "aes128gmac", tun: lab.Tunnel{ESPProposals: "aes128gmac"}, xfrm: []string{"rfc4543(gcm(aes))"}, clear: true},
		{name: "aes256-sha256-esn", tun: lab.Tunnel{ESPProposals: "aes256-sha256-esn"}, xfrm: []string{"cbc(aes)", "esn"}},
		{name: "aes128gcm16-esn-udp", tun: lab.Tunnel{ESPProposals: "aes128gcm16-esn", Encap: true}, xfrm: []string{"rfc4106(gcm(aes))", "esn", "encap type espinudp"}},
		{name: "6in6-plain", tun: lab.Tunnel{ESPProposals: "aes128gcm16", Outer: lab.FamilyV6, Inner: lab.FamilyV6}, xfrm: []string{"rfc4106(gcm(aes))"}},
		{name: "transport-v4", tun: lab.Tunnel{ESPProposals: "aes128gcm16", Transport: true}, xfrm: []string{"mode transport"}},
		{name: "transport-v6", tun: lab.Tunnel{ESPProposals: "aes256-sha256", Transport: true, Outer: lab.FamilyV6}, xfrm: []string{"mode transport", "cbc(aes)"}},
	}
	g := start(t, ctx, lab.Options{KernelPeer: true, IPv6: true}, rows[0].tun)
	l := g.l
	pr := l.Host(lab.PR).(*lab.UML)
	t.Logf("kernel peer %s booted in %v", pr, pr.BootTime())
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			t0 := time.Now()
			if i > 0 {
				if err := g.Renegotiate(ctx, row.tun); err != nil {
					t.Fatal(err)
				}
			}
			cw, err := captureWAN(l)
			if err != nil {
				t.Fatal(err)
			}
			defer cw.stop()
			gwA, prA := wanAddrs(row.tun.Outer)
			if row.tun.Transport {
				for _, p := range []struct{ from, to string }{{lab.GW, prA.String()}, {lab.PR, gwA.String()}} {
					if err := l.Ping(ctx, p.from, p.to, 5); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				h1, h2 := lab.H1Addr, lab.H2Addr
				if row.tun.Inner == lab.FamilyV6 {
					h1, h2 = lab.H1Addr6, lab.H2Addr6
				}
				for _, p := range []struct{ from, to string }{{lab.H1, h2}, {lab.H2, h1}} {
					if err := l.Ping(ctx, p.from, p.to, 5); err != nil {
						t.Fatal(err)
					}
				}
				streams := []lab.SeqOptions{
					{From: lab.H1, To: lab.H2, ToAddr: h2, Port: 7001, Rate: 200, Duration: 2 * time.Second, Size: 200},
					{From: lab.H2, To: lab.H1, ToAddr: h1, Port: 7002, Rate: 200, Duration: 2 * time.Second, Size: 200},
				}
				l.RunUDPSeqs(ctx, t, streams...)
			}
			pkts, err := cw.stop()
			if err != nil {
				t.Fatal(err)
			}
			w, err := checkESPKind(pkts, gwA.String(), prA.String(), row.tun.Encap)
			if err != nil {
				t.Error(err)
			}
			if w.toPeer < 5 || w.fromPeer < 5 {
				t.Errorf("ESP on the WAN: %d packets gw -> pr, %d pr -> gw; want the traffic in both ways", w.toPeer, w.fromPeer)
			}
			st, err := pr.Exec(ctx, "ip", "-s", "xfrm", "state")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range row.xfrm {
				if !strings.Contains(st, want) {
					t.Errorf("peer kernel's XFRM states lack %q:\n%s", want, st)
				}
			}
			t.Logf("%s: WAN ESP gw -> pr %d, pr -> gw %d, IKE %d (%.1fs)", row.name, w.toPeer, w.fromPeer, w.ike, time.Since(t0).Seconds())
		})
	}
}

type espKinds struct{ toPeer, fromPeer, ike int }

// checkESPKind reports any routed packet on the WAN that is not between gw
// and pr, or is neither IKE nor ESP of the wanted kind (IP protocol 50, or
// ESP in UDP 4500 with encap).
func checkESPKind(pkts []lab.Packet, gw, pr string, encap bool) (espKinds, error) {
	var w espKinds
	var bad []string
	for _, p := range pkts {
		if !p.Src.IsValid() || lab.LinkLocal(p) || p.Proto == 58 && p.Dst.IsLinkLocalUnicast() {
			continue // ARP, neighbour discovery (also to a link-local address)
		}
		src, dst := p.Src.String(), p.Dst.String()
		toPeer := src == gw && dst == pr
		isESP := (encap && p.ESPinUDP) || (!encap && p.Proto == 50)
		isIKE := p.Proto == 17 && !p.ESPinUDP && (p.DstPort == 500 || p.DstPort == 4500)
		switch {
		case !toPeer && !(src == pr && dst == gw):
			bad = append(bad, p.String())
		case isESP && toPeer:
			w.toPeer++
		case isESP:
			w.fromPeer++
		case isIKE:
			w.ike++
		default:
			bad = append(bad, p.String())
		}
	}
	if len(bad) > 0 {
		return w, fmt.Errorf("%d packets on the WAN that are neither IKE nor %s between %s and %s, first: %s",
			len(bad), map[bool]string{false: "plain ESP", true: "ESP-in-UDP"}[encap], gw, pr, strings.Join(bad[:min(len(bad), 10)], "; "))
	}
	return w, nil
}

// TestKernelPeerWireCheck: the check of TestKernelPeerESP catches what it
// is there for: plaintext between the LANs, ESP of the other kind.
func TestKernelPeerWireCheck(t *testing.T) {
	pcap := func(ps ...lab.Packet) []lab.Packet { return ps }
	mk := func(src, dst string, proto uint8, sport, dport uint16, espInUDP bool) lab.Packet {
		return lab.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: proto,
			SrcPort: sport, DstPort: dport, ESPinUDP: espInUDP}
	}
	good := pcap(mk(lab.GWWanAddr, lab.PRWanAddr, 50, 0, 0, false), mk(lab.PRWanAddr, lab.GWWanAddr, 17, 500, 500, false))
	if _, err := checkESPKind(good, lab.GWWanAddr, lab.PRWanAddr, false); err != nil {
		t.Fatalf("plain ESP and IKE flagged: %v", err)
	}
	for _, c := range []struct {
		name  string
		pkts  []lab.Packet
		encap bool
	}{
		{"plaintext between the LANs", pcap(mk(lab.H1Addr, lab.H2Addr, 17, 1000, 7001, false)), false},
		{"ESP-in-UDP where plain ESP is due", pcap(mk(lab.GWWanAddr, lab.PRWanAddr, 17, 4500, 4500, true)), false},
		{"plain ESP where ESP-in-UDP is due", pcap(mk(lab.GWWanAddr, lab.PRWanAddr, 50, 0, 0, false)), true},
		{"an echo in clear between the gateways", pcap(mk(lab.GWWanAddr, lab.PRWanAddr, 1, 0, 0, false)), false},
	} {
		if _, err := checkESPKind(c.pkts, lab.GWWanAddr, lab.PRWanAddr, c.encap); err == nil {
			t.Errorf("%s: not caught", c.name)
		}
	}
}
