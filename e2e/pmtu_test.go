package e2e

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bench/traffic"
	"github.com/swanpath/swanpath/lab"
)

// TestMiddleboxPathMTU: issue 17, point 3, the path MTU learned from ICMP.
// The middlebox's link to the peer has an MTU of 1400 and forwards nothing
// with DF that does not fit: it answers with ICMP "fragmentation needed"
// to the gateway's WAN address. The gateway copies DF from inside to its
// ESP, learns the SA's path MTU from that ICMP (pmtu_learned) and answers
// the LAN host's next packet with DF that would not fit with its own ICMP,
// carrying 1400 less the SA's overhead (1338 for AES-GCM in UDP): h1's TCP
// (PMTU discovery on) then runs through without a fragment on the WAN,
// where without the learning every full segment would vanish at the
// middlebox. A forged ICMP quoting an SPI of none of the gateway's SAs
// teaches nothing (pmtu_ignored).
func TestMiddleboxPathMTU(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	g := start(t, ctx, lab.Options{Middlebox: &lab.MiddleboxOptions{FarMTU: 1400}},
		lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true})
	stats := func() map[string]uint64 {
		t.Helper()
		st, err := g.d.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st[lab.GWWan]
	}

	t.Run("forged ICMP is ignored", func(t *testing.T) {
		before := stats()
		if err := sendFragNeeded(ctx, g.l, 0xdeadbeef, 600); err != nil {
			t.Fatal(err)
		}
		err := waitFor(ctx, "pmtu_ignored", func() (bool, error) {
			return stats()["pmtu_ignored"] > before["pmtu_ignored"], nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if after := stats(); after["pmtu_learned"] != before["pmtu_learned"] {
			t.Fatalf("a forged ICMP taught a path MTU: pmtu_learned %d -> %d", before["pmtu_learned"], after["pmtu_learned"])
		}
	})

	t.Run("TCP with PMTU discovery runs through", func(t *testing.T) {
		wan0, lan0 := stats(), map[string]uint64(nil)
		if st, err := g.d.Stats(ctx); err == nil {
			lan0 = st[lab.GWLan]
		}
		mb0, err := g.l.MiddleboxCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res, err := g.l.Iperf3(ctx, lab.H2, lab.H2Addr, lab.H1, 5, false, "-b", "20M")
		if err != nil {
			t.Fatalf("TCP black-holed: %v", err)
		}
		st, err := g.d.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mb1, err := g.l.MiddleboxCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		route, err := g.l.Host(lab.H1).Exec(ctx, "ip", "route", "get", lab.H2Addr)
		if err != nil {
			t.Fatal(err)
		}
		wan, lan := st[lab.GWWan], st[lab.GWLan]
		t.Logf("iperf3 h1 -> h2 %.2f Mbit/s, %d bytes, %d retransmits; gateway: pmtu_learned +%d, ICMP to the LAN +%d, ESP fragments +%d; middlebox: %s; h1: %s",
			res.BitsPerSec/1e6, res.Bytes, res.Retransmits, wan["pmtu_learned"]-wan0["pmtu_learned"],
			lan["icmp_mtu"]-lan0["icmp_mtu"], wan["frag_out"]-wan0["frag_out"], mb1.Sub(mb0), strings.TrimSpace(route))
		if wan["pmtu_learned"] == wan0["pmtu_learned"] || mb1.FragNeeded == mb0.FragNeeded {
			t.Errorf("no path MTU learned (pmtu_learned %d -> %d; the middlebox sent %d ICMP)", wan0["pmtu_learned"],
				wan["pmtu_learned"], mb1.FragNeeded-mb0.FragNeeded)
		}
		if wan["frag_out"] != wan0["frag_out"] || mb1.FragsNear != mb0.FragsNear {
			t.Errorf("fragments on the WAN: gateway frag_out %d -> %d, middlebox %s", wan0["frag_out"], wan["frag_out"], mb1.Sub(mb0))
		}
		sas, err := g.d.SAs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if out, ok := saByDir(sas, "out"); !ok || out.PathMTU != 1400 {
			t.Errorf("swanpathctl sa: outbound SA's path MTU %d, want 1400 (%+v)", out.PathMTU, sas)
		}
		if !strings.Contains(route, "mtu 1338") {
			t.Errorf("h1's path MTU to h2: %q, want 1338 (1400 less the SA's 60 bytes and padding)", route)
		}
	})
}

// sendFragNeeded sends, from the middlebox to the gateway's WAN address, an
// ICMP "fragmentation needed" (next-hop MTU mtu) quoting a 1500-byte
// ESP-in-UDP packet from the gateway to the peer with SPI spi.
func sendFragNeeded(ctx context.Context, l *lab.Lab, spi uint32, mtu uint16) error {
	mac := func(role, ifc string) (net.HardwareAddr, error) {
		out, err := l.Host(role).Exec(ctx, "cat", "/sys/class/net/"+ifc+"/address")
		if err != nil {
			return nil, err
		}
		return net.ParseMAC(strings.TrimSpace(out))
	}
	gwMAC, err := mac(lab.GW, lab.GWWanTap)
	if err != nil {
		return err
	}
	mbMAC, err := mac(lab.MB, "near")
	if err != nil {
		return err
	}
	a4 := func(s string) []byte { b := netip.MustParseAddr(s).As4(); return b[:] }
	ipv4 := func(total int, proto byte, src, dst string) []byte {
		h := make([]byte, 20)
		h[0], h[8], h[9] = 0x45, 64, proto
		binary.BigEndian.PutUint16(h[2:], uint16(total))
		copy(h[12:], a4(src))
		copy(h[16:], a4(dst))
		binary.BigEndian.PutUint16(h[10:], traffic.Checksum(h))
		return h
	}
	// the quote: IP, UDP 4500 -> 4500, the SPI and a sequence number
	quote := ipv4(1500, 17, lab.GWWanAddr, lab.PRWanAddr)
	udp := make([]byte, 16)
	binary.BigEndian.PutUint16(udp[0:], 4500)
	binary.BigEndian.PutUint16(udp[2:], 4500)
	binary.BigEndian.PutUint16(udp[4:], 1480)
	binary.BigEndian.PutUint32(udp[8:], spi)
	binary.BigEndian.PutUint32(udp[12:], 1)
	quote = append(quote, udp...)
	icmp := make([]byte, 8, 8+len(quote))
	icmp[0], icmp[1] = 3, 4
	binary.BigEndian.PutUint16(icmp[6:], mtu)
	icmp = append(icmp, quote...)
	binary.BigEndian.PutUint16(icmp[2:], traffic.Checksum(icmp))
	frame := append(append(append([]byte{}, gwMAC...), mbMAC...), 0x08, 0x00)
	frame = append(frame, ipv4(20+len(icmp), 1, lab.MBAddr, lab.GWWanAddr)...)
	frame = append(frame, icmp...)
	return l.SendFrames(lab.MB, "near", [][]byte{frame})
}
