package fastpath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// seqCases checks, in the child process of TestFastpathRoundTrip, what a
// restart of swanpathd relies on: an outbound SA created with a start
// sequence number sends from it; an inbound SA created with the highest
// number received before a restart refuses every number up to it as a
// replay (drop_replay) and accepts the next, and reports the highest
// number it accepted (SeqSeen, what the control plane checkpoints). A
// blocked outbound SA sends nothing (drop_seq), also once moved.
func seqCases(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) {
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	const spi = 0x6101
	out := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: spi, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 61,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500,
		ReplayWindow: 32, SeqStart: 100, EncKey: append(model.Key(nil), key...)}
	in := out
	in.Inbound, in.Dst, in.Src = true, gwAddr, peerAddr
	in.SeqStart = 102 // received up to 102 before the "restart"
	in.EncKey = append(model.Key(nil), key...)
	outID, inID := out.SAID, in.SAID
	for _, sa := range []*model.SA{&out, &in} {
		if err := fp.AddSA(sa); err != nil {
			t.Fatal(err)
		}
	}
	defer e.delSAs(outID, inID)
	sel := model.Selector{Src: netip.PrefixFrom(h1, 32), Dst: netip.PrefixFrom(h2, 32)}
	pol := func(d model.Dir) *model.Policy {
		return &model.Policy{PolicyID: model.PolicyID{Sel: sel, Dir: d}, Reqid: 61, Mode: model.ModeTunnel}
	}
	if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol(model.DirOut), SA: outID, HasSA: true}, {Policy: pol(model.DirFwd)}}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fp.SetPolicies(nil) }()

	payload := func(i int) string { return fmt.Sprintf("seq-case-%03d", i) }
	isESP := func(ip []byte) bool {
		return ip[9] == 17 && binary.BigEndian.Uint16(ip[22:]) == 4500 && binary.BigEndian.Uint32(ip[28:]) == spi
	}
	isPlain := func(i int) func([]byte) bool {
		return func(ip []byte) bool {
			return ip[9] == 17 && bytes.Equal(ip[12:16], h1.AsSlice()) && bytes.HasSuffix(ip, []byte(payload(i)))
		}
	}
	// the outbound SA sends 100, 101, 102, 103
	esp := map[uint32][]byte{}
	for i := range 4 {
		e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, []byte(payload(100+i)))))
		f := e.recv("ESP of the outbound SA", 0x0800, isESP)
		seq := binary.BigEndian.Uint32(f[14+32:])
		if seq != uint32(100+i) {
			t.Fatalf("outbound SA created to start at 100 sent sequence number %d as its packet %d", seq, i+1)
		}
		esp[seq] = e.back(f)
	}

	// at or below the inbound SA's start: replays
	before := e.counters()
	for seq := uint32(100); seq <= 102; seq++ {
		e.send(esp[seq])
	}
	e.wait("drop_replay", before["drop_replay"]+3)
	// the next one passes, decrypted
	e.send(esp[103])
	e.recv("the number above the inbound SA's start, decrypted", 0x0800, isPlain(103))
	after := e.counters()
	if d := after["drop_replay"] - before["drop_replay"]; d != 3 {
		t.Fatalf("drop_replay +%d, want 3 (100, 101, 102)", d)
	}
	st, _ := fp.SAStats(inID)
	if st.DropReplay != 3 || st.Packets != 1 || st.SeqSeen != 103 {
		t.Fatalf("inbound SA: drop_replay %d, packets %d, highest number seen %d; want 3, 1, 103", st.DropReplay, st.Packets, st.SeqSeen)
	}

	// blocked: nothing more goes out, counted as drop_seq, the SA stays
	if err := fp.BlockSA(inID); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("BlockSA of an inbound SA: %v, want ErrInvalid", err)
	}
	if err := fp.BlockSA(outID); err != nil {
		t.Fatal(err)
	}
	before = e.counters()
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, []byte(payload(200)))))
	e.wait("drop_seq", before["drop_seq"]+1)
	// moved (NAT remapping), it stays blocked
	if err := fp.MoveSA(outID, gwAddr, peerAddr, 4500, 31000, true); err != nil {
		t.Fatal(err)
	}
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, []byte(payload(201)))))
	e.wait("drop_seq", before["drop_seq"]+2)
	after = e.counters()
	so, ok := fp.SAStats(outID)
	if !ok || !so.Blocked || so.Packets != 4 || after["esp_out"] != before["esp_out"] || after["drop_expired"] != before["drop_expired"] {
		t.Fatalf("blocked SA: %+v (installed %v); esp_out +%d, drop_expired +%d; want blocked, 4 packets, nothing sent, none expired",
			so, ok, after["esp_out"]-before["esp_out"], after["drop_expired"]-before["drop_expired"])
	}
}
