package pluginsock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

func testSA() model.SA {
	return model.SA{
		SAID:     model.SAID{Dst: netip.MustParseAddr("192.0.2.2"), SPI: 0xc1234567, Proto: model.ProtoESP, Mark: 42},
		Src:      netip.MustParseAddr("192.0.2.1"),
		MarkMask: 0xff, IfID: 7, Reqid: 3, Mode: model.ModeTunnel, Inbound: true,
		Encap: true, SrcPort: 4500, DstPort: 31337,
		EncAlg: model.EncrAESGCM16, EncKey: model.Key(bytes.Repeat([]byte{0xaa}, 20)),
		IntAlg: model.IntegNone, ICVLen: 16, ReplayWindow: 64, ESN: true,
		Soft: model.Lifetime{Bytes: 1 << 30, Packets: 1 << 20, Time: 3000 * time.Second},
		Hard: model.Lifetime{Bytes: 2 << 30, Packets: 2 << 20, Time: 3600 * time.Second},
	}
}

func testPolicy() model.Policy {
	return model.Policy{
		PolicyID: model.PolicyID{
			Sel: model.Selector{
				Src: netip.MustParsePrefix("10.1.0.0/16"), Dst: netip.MustParsePrefix("2001:db8::/32"),
				Proto: 6, SrcPortLo: 1024, SrcPortHi: 65535, DstPortLo: 443, DstPortHi: 443,
			},
			Dir: model.DirFwd, Mark: 1, MarkMask: 0xffffffff, IfID: 9,
		},
		Action: model.ActionIPsec, Priority: 375423, Reqid: 3, Mode: model.ModeTunnel,
		TmplSrc: netip.MustParseAddr("192.0.2.1"), TmplDst: netip.MustParseAddr("192.0.2.2"), SPI: 0xc7654321,
	}
}

func TestRoundTrip(t *testing.T) {
	sa := testSA()
	cbc := testSA()
	cbc.EncAlg, cbc.EncKey = model.EncrAESCBC, model.Key(bytes.Repeat([]byte{1}, 16))
	cbc.IntAlg, cbc.IntKey = model.IntegHMACSHA256_128, model.Key(bytes.Repeat([]byte{2}, 32))
	cbc.Src, cbc.Dst = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	pol := testPolicy()
	anyPol := model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{
		Src: netip.MustParsePrefix("0.0.0.0/0"), Dst: netip.MustParsePrefix("0.0.0.0/0"), SrcPortHi: 0xffff, DstPortHi: 0xffff}},
		Action: model.ActionPass}
	id := sa.SAID
	tests := []struct {
		name string
		m    Message
	}{
		{"hello", Message{Type: TypeHello, Seq: 1, Hello: Hello{Name: "charon 5.9.8", PID: 4242}}},
		{"get_spi", Message{Type: TypeGetSPI, Seq: 2, SA: model.SA{Src: sa.Src, SAID: model.SAID{Dst: sa.Dst, Proto: 50}}}},
		{"add_sa gcm", Message{Type: TypeAddSA, Seq: 3, SA: sa}},
		{"add_sa cbc v6", Message{Type: TypeAddSA, Seq: 4, SA: cbc}},
		{"update_sa", Message{Type: TypeUpdateSA, Seq: 5, SA: model.SA{SAID: id, Src: sa.Src, MarkMask: 0xff},
			Update: SAUpdate{NewSrc: netip.MustParseAddr("198.51.100.1"), NewDst: sa.Dst, NewSrcPort: 4501, NewDstPort: 4500, Encap: true}}},
		{"query_sa", Message{Type: TypeQuerySA, Seq: 6, SA: model.SA{SAID: id, Src: sa.Src}}},
		{"del_sa", Message{Type: TypeDelSA, Seq: 7, SA: model.SA{SAID: id, Src: sa.Src, IfID: 3}}},
		{"flush_sas", Message{Type: TypeFlushSAs, Seq: 8}},
		{"add_policy", Message{Type: TypeAddPolicy, Seq: 9, Policy: pol}},
		{"add_policy pass any", Message{Type: TypeAddPolicy, Seq: 10, Policy: anyPol}},
		{"query_policy", Message{Type: TypeQueryPolicy, Seq: 11, Policy: pol}},
		{"del_policy", Message{Type: TypeDelPolicy, Seq: 12, Policy: pol}},
		{"flush_policies", Message{Type: TypeFlushPolicies, Seq: 13}},
		{"result ok", Message{Type: TypeResult, Seq: 14}},
		{"result spi", Message{Type: TypeResult, Seq: 15, Result: Result{SPI: 0xc0000001}}},
		{"result stats", Message{Type: TypeResult, Seq: 16, Result: Result{Stats: model.SAStats{Bytes: 1, Packets: 2, LastUse: time.Unix(1700000000, 0)}}}},
		{"result error", Message{Type: TypeResult, Seq: 17, Result: Result{Status: StatusNotFound, Message: "no SA spi=0x00000001"}}},
		{"expire soft", Message{Type: TypeExpire, Event: Event{Kind: EventExpire, SA: id}}},
		{"expire hard", Message{Type: TypeExpire, Event: Event{Kind: EventExpire, SA: id, Hard: true}}},
		{"acquire", Message{Type: TypeAcquire, Event: Event{Kind: EventAcquire, Reqid: 5,
			Src: netip.MustParseAddr("10.1.0.5"), Dst: netip.MustParseAddr("10.2.0.7")}}},
		{"mapping", Message{Type: TypeMapping, Event: Event{Kind: EventMapping, SA: id,
			Src: netip.MustParseAddr("203.0.113.9"), NewPort: 61000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendMessage(nil, &tt.m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.m
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", *got, want)
			}
			// Through a stream as well.
			got2, err := ReadMessage(bytes.NewReader(b))
			if err != nil || !reflect.DeepEqual(got, got2) {
				t.Errorf("ReadMessage = %+v, %v", got2, err)
			}
		})
	}
}

func TestDecodeSkipsUnknownAttributes(t *testing.T) {
	m := Message{Type: TypeQuerySA, Seq: 9, SA: model.SA{SAID: testSA().SAID}}
	b, err := AppendMessage(nil, &m)
	if err != nil {
		t.Fatal(err)
	}
	extra := []byte{0x7f, 0xff, 0, 3, 1, 2, 3}
	b = append(b, extra...)
	binary.BigEndian.PutUint32(b[8:], binary.BigEndian.Uint32(b[8:])+uint32(len(extra)))
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.SA.SAID != m.SA.SAID {
		t.Errorf("SAID = %v, want %v", got.SA.SAID, m.SA.SAID)
	}
}

// frame builds a frame with a raw payload.
func frame(version, typ byte, payload []byte) []byte {
	b := []byte{version, typ, 0, 0, 0, 0, 0, 1}
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func tlv(typ uint16, v ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

func TestDecodeMalformed(t *testing.T) {
	big := make([]byte, HeaderLen)
	big[0], big[1] = Version, byte(TypeAddSA)
	binary.BigEndian.PutUint32(big[8:], MaxPayload+1)
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "header truncated"},
		{"short header", []byte{1, 3, 0}, "header truncated"},
		{"bad version", frame(2, 3, nil), "version 2"},
		{"oversize", big, "exceeds"},
		{"length mismatch", append(frame(1, 3, nil), 0), "header says 0"},
		{"attr header truncated", frame(1, 3, []byte{0, 1, 0}), "attribute header truncated"},
		{"attr past end", frame(1, 3, []byte{0, 1, 0, 9, 1, 2, 3, 4}), "runs past"},
		{"bad addr len", frame(1, 3, tlv(attrSrc, 1, 2, 3)), "SRC (1): length 3, want 4 or 16"},
		{"bad u32 len", frame(1, 3, tlv(attrSPI, 1, 2)), "SPI (3): length 2, want 4"},
		{"bad u8 len", frame(1, 3, tlv(attrProto)), "PROTO (4): length 0, want 1"},
		{"bad u64 len", frame(1, 3, tlv(attrSoftBytes, 1)), "SOFT_BYTES"},
		{"bad prefix len", frame(1, 8, tlv(attrSelSrc, 33, 10, 0, 0, 0)), "prefix length 33"},
		{"bad range len", frame(1, 8, tlv(attrSelSport, 0, 1)), "SEL_SPORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.b)
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode error = %v, want ErrMalformed containing %q", err, tt.want)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	sa := testSA()
	sa.EncKey = make(model.Key, 70000)
	if _, err := AppendMessage(nil, &Message{Type: TypeAddSA, SA: sa}); err == nil {
		t.Error("70000-byte key encoded without error")
	}
	if _, err := AppendMessage(nil, &Message{Type: 99}); err == nil {
		t.Error("unknown type encoded without error")
	}
	if _, err := EventMessage(Event{Kind: 9}); err == nil {
		t.Error("unknown event kind accepted")
	}
}

func TestKeysNotAliased(t *testing.T) {
	m := Message{Type: TypeAddSA, SA: testSA()}
	b, _ := AppendMessage(nil, &m)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !bytes.Equal(got.SA.EncKey, m.SA.EncKey) {
		t.Error("decoded key aliases the frame buffer")
	}
	if s := (&got.SA).EncKey.String(); strings.Contains(s, "aa") {
		t.Errorf("key prints its bytes: %s", s)
	}
}

// FuzzDecode: no input panics, and whatever decodes re-encodes stably.
func FuzzDecode(f *testing.F) {
	for _, m := range []Message{
		{Type: TypeAddSA, Seq: 1, SA: testSA()},
		{Type: TypeAddPolicy, Seq: 2, Policy: testPolicy()},
		{Type: TypeResult, Seq: 3, Result: Result{Status: StatusFailed, Message: "x", Stats: model.SAStats{Bytes: 5, Packets: 1}}},
		{Type: TypeMapping, Event: Event{Kind: EventMapping, SA: testSA().SAID, Src: netip.MustParseAddr("::1"), NewPort: 1}},
	} {
		b, _ := AppendMessage(nil, &m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if _, err := ReadMessage(bytes.NewReader(b)); err != nil {
			t.Fatalf("Decode ok, ReadMessage: %v", err)
		}
		b1, err := AppendMessage(nil, m)
		if err != nil {
			return // e.g. unknown type: decodable, not encodable
		}
		m2, err := Decode(b1)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		b2, err := AppendMessage(nil, m2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("unstable re-encoding: %x vs %x (%v)", b1, b2, err)
		}
	})
}
