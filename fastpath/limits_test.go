package fastpath

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// limitCases checks hard lifetimes in the loop, in the child process of
// TestFastpathRoundTrip: ten packets sent back to back (they may share a
// burst) on an SA whose hard limit lets five and a half through by bytes,
// or four by packets. Exactly the packets within the limit are encrypted;
// the rest are dropped as drop_expired, never sent.
func limitCases(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) {
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	defer func() { _ = fp.SetPolicies(nil) }()

	pkt := func(i int) []byte {
		return ipv4udp(h1, h2, 1000, 2000, 64, fmt.Appendf(nil, "limit-%02d-%090d", i, 0))
	}
	size := uint64(len(pkt(0)))
	for _, c := range []struct {
		name string
		spi  uint32
		hard model.Lifetime
		want uint64
	}{
		{"bytes", 0x6001, model.Lifetime{Bytes: 5*size + size/2}, 5},
		{"packets", 0x6002, model.Lifetime{Packets: 4}, 4},
	} {
		tmpl := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: c.spi, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 60,
			Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500, Hard: c.hard}
		out, in := e.addPair(tmpl, key)
		pol := &model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{Src: netip.PrefixFrom(h1, 32), Dst: netip.PrefixFrom(h2, 32)}, Dir: model.DirOut},
			Reqid: 60, Mode: model.ModeTunnel}
		if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol, SA: out, HasSA: true}}); err != nil {
			t.Fatal(err)
		}
		before := e.counters()
		for i := range 10 {
			e.send(frame(portMAC, vb.HardwareAddr, pkt(i)))
		}
		e.wait("drop_expired", before["drop_expired"]+10-c.want)
		// the packets within the limit are counted as sent after their
		// crypto, which may come after the drops of the same burst
		e.wait("esp_out", before["esp_out"]+c.want)
		after := e.counters()
		st, _ := fp.SAStats(out)
		if st.Packets != c.want || st.Bytes != c.want*size || after["esp_out"]-before["esp_out"] != c.want {
			t.Fatalf("hard limit by %s: SA carried %d packets (%d bytes), esp_out +%d; want %d packets of %d bytes",
				c.name, st.Packets, st.Bytes, after["esp_out"]-before["esp_out"], c.want, size)
		}
		for _, id := range []model.SAID{out, in} {
			if err := fp.DelSA(id); err != nil {
				t.Fatal(err)
			}
		}
	}
}
