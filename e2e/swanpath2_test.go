package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/lab"
)

// sasOf is `swanpathctl sa --json` of d, which must hold exactly one
// inbound and one outbound SA.
func sasOf(t *testing.T, ctx context.Context, d *lab.Swanpathd) (in, out ctl.SA) {
	t.Helper()
	sas, err := d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in, okIn := saByDir(sas, "in")
	out, okOut := saByDir(sas, "out")
	if !okIn || !okOut || len(sas) != 2 {
		t.Fatalf("swanpathctl sa in %s: want one in and one out SA, got %+v", d.Role(), sas)
	}
	return in, out
}

// TestSwanpathPairPlainESP: two swanpath gateways, `encap = no` on both and
// no NAT between them, so ESP goes as IP protocol 50, never in UDP. Each
// suite is one subtest on the same lab (the tunnel is renegotiated with the
// suite's esp_proposals): the suites kernel-libipsec cannot do (AES-GMAC,
// ESN) and AES-GCM. Both fast paths must agree on every packet: h1 and h2
// ping each other, the WAN carries the tunnelled traffic only as protocol
// 50 between the gateways' WAN addresses (counted per SPI, equal to what
// the sending side counts and what the receiving side decrypted), and the
// payload is in clear on the wire exactly for the auth-only suite.
func TestSwanpathPairPlainESP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	suites := []struct {
		esp             string
		aead, enc, auth string // as swanpathctl names them
		esn             bool
		clear           bool // auth only (ENCR_NULL_AUTH_AES_GMAC, RFC 4543)
	}{
		{esp: "aes128gcm16", aead: "rfc4106(gcm(aes))"},
		{esp: "aes128gmac", aead: "rfc4543(gcm(aes))", clear: true},
		{esp: "aes128gcm16-esn", aead: "rfc4106(gcm(aes))", esn: true},
		{esp: "aes256-sha256-esn", enc: "cbc(aes)", auth: "hmac(sha256)", esn: true},
		{esp: "chacha20poly1305-esn", aead: "rfc7539esp(chacha20,poly1305)", esn: true},
	}
	g := startPair(t, ctx, lab.Options{}, lab.Tunnel{ESPProposals: suites[0].esp})
	l := g.l
	for _, su := range suites {
		t.Run(su.esp, func(t *testing.T) {
			// the capture covers the negotiation too: IKE_SA_INIT on 500
			cw, err := captureWAN(l)
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Renegotiate(ctx, lab.Tunnel{ESPProposals: su.esp}); err != nil {
				cw.stop()
				t.Fatal(err)
			}
			for _, p := range []struct{ from, to string }{{lab.H1, lab.H2Addr}, {lab.H2, lab.H1Addr}} {
				if err := l.Ping(ctx, p.from, p.to, 5); err != nil {
					cw.stop()
					t.Fatal(err)
				}
			}
			pkts, err := cw.stop()
			if err != nil {
				t.Fatal(err)
			}

			gwIn, gwOut := sasOf(t, ctx, g.D)
			prIn, prOut := sasOf(t, ctx, g.PD)
			if gwOut.SPI != prIn.SPI || prOut.SPI != gwIn.SPI {
				t.Fatalf("SPIs do not mirror: gw in %s out %s, pr in %s out %s", gwIn.SPI, gwOut.SPI, prIn.SPI, prOut.SPI)
			}
			for _, s := range []struct {
				side     string
				sa       ctl.SA
				src, dst string
			}{
				{"gw", gwOut, lab.GWWanAddr, lab.PRWanAddr}, {"gw", gwIn, lab.PRWanAddr, lab.GWWanAddr},
				{"pr", prOut, lab.PRWanAddr, lab.GWWanAddr}, {"pr", prIn, lab.GWWanAddr, lab.PRWanAddr},
			} {
				sa := s.sa
				if sa.Encap || sa.SrcPort != 0 || sa.DstPort != 0 {
					t.Errorf("%s %s SA %s is UDP-encapsulated (%d -> %d)", s.side, sa.Dir, sa.SPI, sa.SrcPort, sa.DstPort)
				}
				if sa.ESN != su.esn {
					t.Errorf("%s %s SA %s: esn %v, want %v", s.side, sa.Dir, sa.SPI, sa.ESN, su.esn)
				}
				if sa.Aead != su.aead || sa.Enc != su.enc || sa.Auth != su.auth {
					t.Errorf("%s %s SA %s: aead %q enc %q auth %q, want %q %q %q", s.side, sa.Dir, sa.SPI,
						sa.Aead, sa.Enc, sa.Auth, su.aead, su.enc, su.auth)
				}
				if sa.Src != s.src || sa.Dst != s.dst || sa.Mode != "tunnel" {
					t.Errorf("%s %s SA %s: %s mode %s -> %s, want tunnel %s -> %s", s.side, sa.Dir, sa.SPI, sa.Mode, sa.Src, sa.Dst, s.src, s.dst)
				}
			}
			for _, c := range []*lab.Charon{g.GW, g.PR} {
				ikes, err := c.ListSAs(ctx)
				if err != nil {
					t.Fatal(err)
				}
				ike, child, ok := lab.Child(ikes, lab.ChildName)
				if !ok || child.Encap || ike.NATAny {
					t.Errorf("charon: CHILD_SA %+v encap %v, NAT %v; want no encapsulation, no NAT", child, child.Encap, ike.NATAny)
				}
			}

			// what was sent is what was received: the fast paths' counters
			// settle once the last burst is counted
			err = waitFor(ctx, "gw and pr counters agree", func() (bool, error) {
				gwIn, gwOut = sasOf(t, ctx, g.D)
				prIn, prOut = sasOf(t, ctx, g.PD)
				return gwOut.Packets == prIn.Packets && gwOut.Bytes == prIn.Bytes &&
						prOut.Packets == gwIn.Packets && prOut.Bytes == gwIn.Bytes,
					fmt.Errorf("gw out %d pkts/%d B, pr in %d/%d; pr out %d/%d, gw in %d/%d",
						gwOut.Packets, gwOut.Bytes, prIn.Packets, prIn.Bytes, prOut.Packets, prOut.Bytes, gwIn.Packets, gwIn.Bytes)
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: gw -> pr %d packets (%d bytes), pr -> gw %d packets (%d bytes), crypto %s/%s",
				su.esp, gwOut.Packets, gwOut.Bytes, prOut.Packets, prOut.Bytes, gwOut.Crypto, prOut.Crypto)
			if gwOut.Packets < 10 || prOut.Packets < 10 {
				t.Fatalf("10 pings each way, but the SAs carried gw -> pr %d, pr -> gw %d packets", gwOut.Packets, prOut.Packets)
			}

			w := checkPlainESPWire(t, pkts, su.clear)
			spiOut, spiBack := parseSPI(t, gwOut.SPI), parseSPI(t, prOut.SPI)
			t.Logf("WAN: %d frames; ESP gw -> pr %d, pr -> gw %d; IKE on 500 %d, on 4500 %d",
				len(pkts), w.esp[espKey{spiOut, true}], w.esp[espKey{spiBack, false}], w.ike500, w.ike4500)
			if w.ike500 == 0 {
				t.Error("no IKE on UDP 500: the capture missed the negotiation")
			}
			for k, n := range w.esp {
				switch k {
				case espKey{spiOut, true}, espKey{spiBack, false}:
				default:
					t.Errorf("%d ESP packets with SPI 0x%08x (gw -> pr: %v) that is no SA of the tunnel's direction", n, k.spi, k.toPeer)
				}
			}
			if n := w.esp[espKey{spiOut, true}]; uint64(n) != gwOut.Packets {
				t.Errorf("%d ESP packets gw -> pr on the WAN, the SA counts %d", n, gwOut.Packets)
			}
			if n := w.esp[espKey{spiBack, false}]; uint64(n) != prOut.Packets {
				t.Errorf("%d ESP packets pr -> gw on the WAN, the SA counts %d", n, prOut.Packets)
			}
		})
	}
}

// wanCapture captures the WAN at both ends. A fast path sends through
// net_af_packet with qdisc bypass, which packet sockets on the same veth do
// not see: each end's capture holds what arrived from the other.
type wanCapture struct{ gw, pr *lab.Capture }

func captureWAN(l *lab.Lab) (*wanCapture, error) {
	gw, err := l.Capture(lab.GW, lab.GWWan, "")
	if err != nil {
		return nil, err
	}
	pr, err := l.Capture(lab.PR, lab.PRWan, "")
	if err != nil {
		gw.Stop()
		return nil, err
	}
	return &wanCapture{gw: gw, pr: pr}, nil
}

// stop returns every frame that crossed the WAN once: what gw received from
// pr and what pr received from gw (IPv4 or IPv6), and the rest (ARP,
// neighbour discovery, anything else) from both.
func (w *wanCapture) stop() ([]lab.Packet, error) {
	atGW, err1 := w.gw.Stop()
	atPR, err2 := w.pr.Stop()
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	var out []lab.Packet
	gwAddrs := []string{lab.GWWanAddr, lab.GWWanAddr6}
	for _, p := range atGW {
		if !p.Src.IsValid() || !slices.Contains(gwAddrs, p.Src.String()) {
			out = append(out, p) // arrived at gw
		}
	}
	for _, p := range atPR {
		if p.Src.IsValid() && slices.Contains(gwAddrs, p.Src.String()) {
			out = append(out, p) // sent by gw, arrived at pr
		}
	}
	return out, nil
}

type espKey struct {
	spi    uint32
	toPeer bool // gw -> pr
}

type plainESPWire struct {
	esp             map[espKey]int
	ike500, ike4500 int
}

// checkPlainESPWire: every IPv4 packet on the WAN is between the gateways'
// WAN addresses and is ESP (protocol 50) or IKE (UDP 500, or 4500 with the
// non-ESP marker: charon floats there when both sides support NAT-T, NAT or
// not); never ESP-in-UDP, never an inner address in the outer header. The
// inner packet's addresses are in the ESP payload in clear exactly when
// the suite only authenticates (clear).
func checkPlainESPWire(t *testing.T, pkts []lab.Packet, clear bool) plainESPWire {
	t.Helper()
	gw, pr := netip.MustParseAddr(lab.GWWanAddr), netip.MustParseAddr(lab.PRWanAddr)
	h1, h2 := netip.MustParseAddr(lab.H1Addr).As4(), netip.MustParseAddr(lab.H2Addr).As4()
	w := plainESPWire{esp: map[espKey]int{}}
	var bad []string
	shown, visible := 0, 0
	for _, p := range pkts {
		if !p.Src.IsValid() || lab.LinkLocal(p) {
			continue // ARP; IPv6 neighbour discovery and MLD of the TAPs
		}
		toPeer := p.Src == gw && p.Dst == pr
		switch {
		case !toPeer && (p.Src != pr || p.Dst != gw):
			bad = append(bad, p.String())
		case p.Proto == 50:
			w.esp[espKey{p.SPI, toPeer}]++
			// the inner header's source and destination, as they would
			// follow each other in clear
			inner := append(h2[:], h1[:]...)
			if toPeer {
				inner = append(h1[:], h2[:]...)
			}
			ihl := int(p.Data[14]&0x0f) * 4
			inClear := bytes.Contains(p.Data[14+ihl+8:], inner)
			if inClear {
				visible++
			}
			if inClear != clear && shown < 5 {
				shown++
				t.Errorf("ESP %s: inner addresses in clear %v, want %v", p, inClear, clear)
			}
		case p.ESPinUDP:
			bad = append(bad, p.String())
		case p.Proto == 17 && p.SrcPort == 500 && p.DstPort == 500:
			w.ike500++
		case p.Proto == 17 && p.SrcPort == 4500 && p.DstPort == 4500:
			w.ike4500++
		default:
			bad = append(bad, p.String())
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d packets on the WAN that are neither plain ESP nor IKE between the gateways, first: %v", len(bad), bad[:min(len(bad), 10)])
	}
	t.Logf("ESP packets with the inner addresses in clear: %d", visible)
	return w
}

// TestSwanpathPairIPv6Addresses: with Options.IPv6 both swanpath gateways
// carry their IPv6 addresses on swanpathd's TAPs (ConfigureGateway,
// ConfigurePeer). Neighbour discovery and pings reach every router address
// through both fast paths' exception paths, and IPv6 that no policy covers
// (the IPv4 tunnel's selectors are IPv4 only) is routed by the kernels in
// clear between h1 and h2 (over routes the test adds), while the IPv4
// tunnel carries plain ESP beside it.
func TestSwanpathPairIPv6Addresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g := startPair(t, ctx, lab.Options{IPv6: true}, lab.Tunnel{})
	l := g.l
	for _, a := range []struct{ role, tap, addr string }{
		{lab.GW, lab.GWLanTap, lab.GWLanAddr6}, {lab.GW, lab.GWWanTap, lab.GWWanAddr6},
		{lab.PR, lab.PRLanTap, lab.PRLanAddr6}, {lab.PR, lab.PRWanTap, lab.PRWanAddr6},
	} {
		out, err := l.NS(a.role).Exec(ctx, "ip", "-6", "-o", "addr", "show", "dev", a.tap, "to", a.addr+"/128")
		if err != nil || !bytes.Contains([]byte(out), []byte(a.addr+"/64")) {
			t.Fatalf("%s %s lacks %s/64: %q %v", a.role, a.tap, a.addr, out, err)
		}
	}
	for _, p := range []struct{ from, to string }{
		{lab.H1, lab.GWLanAddr6}, {lab.H1, lab.GWWanAddr6}, {lab.GW, lab.PRWanAddr6},
		{lab.PR, lab.GWWanAddr6}, {lab.H2, lab.PRLanAddr6}, {lab.H2, lab.PRWanAddr6},
	} {
		if err := l.Ping(ctx, p.from, p.to, 2); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ role, net, via string }{{lab.GW, lab.RightNet6, lab.PRWanAddr6}, {lab.PR, lab.LeftNet6, lab.GWWanAddr6}} {
		if _, err := l.NS(c.role).Exec(ctx, "ip", "-6", "route", "add", c.net, "via", c.via); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct{ from, to string }{
		{lab.H1, lab.H2Addr6}, {lab.H2, lab.H1Addr6}, {lab.H1, lab.H2Addr}, {lab.H2, lab.H1Addr},
	} {
		if err := l.Ping(ctx, p.from, p.to, 3); err != nil {
			t.Fatal(err)
		}
	}
	_, gwOut := sasOf(t, ctx, g.D)
	if gwOut.Packets < 3 || gwOut.Encap {
		t.Fatalf("IPv4 tunnel: outbound SA %+v, want plain ESP that carried the pings", gwOut)
	}
}
