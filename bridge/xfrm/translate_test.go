package xfrm

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/model"
)

func key(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

var gw = netip.MustParseAddr("192.0.2.1")

func isGW(a netip.Addr) bool { return a == gw || a == netip.MustParseAddr("2001:db8::1") }

func TestToSA(t *testing.T) {
	gcm := stateSpec{src: "198.51.100.2", dst: "192.0.2.1", spi: 0xc1000001, reqid: 7, mode: xfrmModeTunnel,
		aead: "rfc4106(gcm(aes))", icv: 128, key: key(20, 0xaa), window: 32, seq: 41}
	tests := []struct {
		name string
		spec stateSpec
		want func(*model.SA) // fields beyond the common ones
		err  error           // errors.Is; nil: accepted
		msg  string          // in the error
	}{
		{name: "AES-GCM-128 inbound", spec: gcm, want: func(sa *model.SA) {
			sa.EncAlg, sa.ICVLen, sa.EncKey, sa.Inbound, sa.ReplayWindow, sa.SeqStart = model.EncrAESGCM16, 16, key(20, 0xaa), true, 32, 41
		}},
		{name: "AES-GCM 8-byte ICV outbound, UDP-encapsulated, kernel oseq", spec: func() stateSpec {
			s := gcm
			s.src, s.dst, s.icv, s.encap, s.oseq = "192.0.2.1", "198.51.100.2", 64, &[2]uint16{4500, 31337}, 99
			return s
		}(), want: func(sa *model.SA) {
			sa.Src, sa.Dst = gw, netip.MustParseAddr("198.51.100.2")
			sa.EncAlg, sa.ICVLen, sa.EncKey, sa.ReplayWindow = model.EncrAESGCM8, 8, key(20, 0xaa), 32
			sa.Encap, sa.SrcPort, sa.DstPort, sa.SeqStart = true, 4500, 31337, 100
		}},
		{name: "AES-CBC + HMAC-SHA256-128, ESN, byte and packet lifetimes", spec: stateSpec{src: "198.51.100.2", dst: "192.0.2.1",
			spi: 0xc1000002, reqid: 8, mode: xfrmModeTunnel, crypt: "cbc(aes)", key: key(16, 1), auth: "hmac(sha256)",
			trunc: 128, authKey: key(32, 2), esnWindow: 128, softBytes: 1000, hardPackets: 50}, want: func(sa *model.SA) {
			sa.EncAlg, sa.EncKey, sa.IntAlg, sa.IntKey, sa.ICVLen = model.EncrAESCBC, key(16, 1), model.IntegHMACSHA256_128, key(32, 2), 16
			sa.Inbound, sa.ESN, sa.ReplayWindow = true, true, 128
			sa.Soft.Bytes, sa.Hard.Packets = 1000, 50
		}},
		{name: "ChaCha20-Poly1305 transport IPv6", spec: stateSpec{src: "2001:db8::2", dst: "2001:db8::1", spi: 0xc1000003,
			reqid: 9, mode: xfrmModeTransport, aead: "rfc7539esp(chacha20,poly1305)", icv: 128, key: key(36, 3)}, want: func(sa *model.SA) {
			sa.EncAlg, sa.ICVLen, sa.EncKey, sa.Inbound, sa.Mode = model.EncrChaCha20Poly1305, 16, key(36, 3), true, model.ModeTransport
		}},
		{name: "direction from XFRMA_SA_DIR wins", spec: func() stateSpec { s := gcm; s.dir = saDirOut; return s }(),
			want: func(sa *model.SA) {
				sa.EncAlg, sa.ICVLen, sa.EncKey, sa.ReplayWindow = model.EncrAESGCM16, 16, key(20, 0xaa), 32
			}},
		{name: "partial mark refused", spec: func() stateSpec { s := gcm; s.mark = &[2]uint32{5, 0xff}; return s }(), err: model.ErrUnsupported, msg: "mark"},
		{name: "whole mark: route-based (a VTI's)", spec: func() stateSpec { s := gcm; s.mark = &[2]uint32{20, 0xffffffff}; return s }(),
			want: func(sa *model.SA) {
				sa.EncAlg, sa.ICVLen, sa.EncKey, sa.Inbound, sa.ReplayWindow, sa.SeqStart = model.EncrAESGCM16, 16, key(20, 0xaa), true, 32, 41
				sa.Mark, sa.MarkMask = 20, 0xffffffff
			}},
		{name: "if_id: route-based (an XFRM interface's)", spec: func() stateSpec { s := gcm; s.ifID = 3; return s }(),
			want: func(sa *model.SA) {
				sa.EncAlg, sa.ICVLen, sa.EncKey, sa.Inbound, sa.ReplayWindow, sa.SeqStart = model.EncrAESGCM16, 16, key(20, 0xaa), true, 32, 41
				sa.IfID = 3
			}},
		{name: "unknown AEAD", spec: func() stateSpec { s := gcm; s.aead = "rfc4309(ccm(aes))"; return s }(), err: model.ErrUnsupported, msg: "rfc4309"},
		{name: "HMAC-SHA256 truncated to 96", spec: stateSpec{src: "198.51.100.2", dst: "192.0.2.1", spi: 5, mode: 1,
			crypt: "cbc(aes)", key: key(16, 1), auth: "hmac(sha256)", trunc: 96, authKey: key(32, 2)}, err: model.ErrUnsupported, msg: "96 bits"},
		{name: "BEET mode", spec: func() stateSpec { s := gcm; s.mode = 4; return s }(), err: model.ErrUnsupported, msg: "mode 4"},
		{name: "AH", spec: func() stateSpec { s := gcm; s.proto = 51; return s }(), err: model.ErrUnsupported, msg: "only ESP"},
		{name: "non-IKE UDP encapsulation", spec: func() stateSpec {
			s := gcm
			s.encap, s.encapType = &[2]uint16{4500, 4500}, 1
			return s
		}(), err: model.ErrUnsupported, msg: "encapsulation type 1"},
		{name: "larval", spec: stateSpec{src: "198.51.100.2", dst: "192.0.2.1", spi: 6, mode: 1}, err: errLarval},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.spec.msg()
			s, err := parseState(msg)
			if err != nil {
				t.Fatal(err)
			}
			sa, err := toSA(s, isGW)
			if nonZero(msg, tc.spec.key) || nonZero(msg, tc.spec.authKey) {
				t.Error("key bytes left in the message")
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("err = %v, want %v with %q", err, tc.err, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := &model.SA{SAID: model.SAID{Dst: netip.MustParseAddr(tc.spec.dst), SPI: tc.spec.spi, Proto: 50},
				Src: netip.MustParseAddr(tc.spec.src), Reqid: tc.spec.reqid, Mode: model.Mode(tc.spec.mode)}
			tc.want(want)
			if !saEqual(sa, want) {
				t.Errorf("got  %+v\nwant %+v", *sa, *want)
			}
		})
	}
}

// nonZero says whether msg still holds the key (a non-zero key's bytes).
func nonZero(msg, k []byte) bool { return len(k) > 0 && bytes.Contains(msg, k) }

func saEqual(a, b *model.SA) bool {
	ka, kb := *a, *b
	if !bytes.Equal(ka.EncKey, kb.EncKey) || !bytes.Equal(ka.IntKey, kb.IntKey) {
		return false
	}
	ka.EncKey, ka.IntKey, kb.EncKey, kb.IntKey = nil, nil, nil, nil
	return reflect.DeepEqual(ka, kb)
}

func TestToPolicy(t *testing.T) {
	out := policySpec{src: "10.1.0.0/16", dst: "10.2.0.0/16", dir: xfrmDirOut, prio: 1000,
		tmpls: []nl.XfrmUserTmpl{tmpl("192.0.2.1", "198.51.100.2", 7, xfrmModeTunnel, 50)}}
	outWant := model.Policy{
		PolicyID: model.PolicyID{Sel: model.Selector{Src: netip.MustParsePrefix("10.1.0.0/16"), Dst: netip.MustParsePrefix("10.2.0.0/16"),
			SrcPortHi: 0xffff, DstPortHi: 0xffff}, Dir: model.DirOut},
		Action: model.ActionIPsec, Priority: 1000, Reqid: 7, Mode: model.ModeTunnel,
		TmplSrc: gw, TmplDst: netip.MustParseAddr("198.51.100.2")}
	tests := []struct {
		name string
		spec policySpec
		want model.Policy
		err  error
	}{
		{name: "out ipsec tunnel", spec: out, want: outWant},
		{name: "pass with port", spec: policySpec{src: "10.1.0.0/16", dst: "10.1.0.0/16", proto: 6, dport: 22, dportMask: 0xffff, dir: xfrmDirFwd, prio: 5},
			want: model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{Src: netip.MustParsePrefix("10.1.0.0/16"),
				Dst: netip.MustParsePrefix("10.1.0.0/16"), Proto: 6, SrcPortHi: 0xffff, DstPortLo: 22, DstPortHi: 22}, Dir: model.DirFwd},
				Action: model.ActionPass, Priority: 5}},
		{name: "block", spec: policySpec{src: "0.0.0.0/0", dst: "10.9.0.0/16", dir: xfrmDirIn, action: xfrmPolicyBlock},
			want: model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{Src: netip.MustParsePrefix("0.0.0.0/0"),
				Dst: netip.MustParsePrefix("10.9.0.0/16"), SrcPortHi: 0xffff, DstPortHi: 0xffff}, Dir: model.DirIn}, Action: model.ActionDrop}},
		{name: "whole mark: route-based", spec: func() policySpec { p := out; p.mark = &[2]uint32{20, 0xffffffff}; return p }(),
			want: func() model.Policy { p := outWant; p.Mark, p.MarkMask = 20, 0xffffffff; return p }()},
		{name: "if_id: route-based", spec: func() policySpec { p := out; p.ifID = 4; return p }(),
			want: func() model.Policy { p := outWant; p.IfID = 4; return p }()},
		{name: "partial mark", spec: func() policySpec { p := out; p.mark = &[2]uint32{20, 0xff}; return p }(), err: model.ErrUnsupported},
		{name: "AH template", spec: func() policySpec {
			p := out
			p.tmpls = []nl.XfrmUserTmpl{tmpl("192.0.2.1", "198.51.100.2", 7, 1, 51)}
			return p
		}(), err: model.ErrUnsupported},
		{name: "port mask", spec: func() policySpec { p := out; p.proto, p.dport, p.dportMask = 6, 1024, 0xfc00; return p }(), err: model.ErrUnsupported},
		{name: "socket policy", spec: func() policySpec { p := out; p.dir = 4; return p }(), err: errNotMirrored},
		{name: "swanpathd's bypass", spec: func() policySpec {
			p := out
			p.tmpls, p.mark = nil, &[2]uint32{1, 1}
			return p
		}(), err: errNotMirrored},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePolicy(tc.spec.msg())
			if err != nil {
				t.Fatal(err)
			}
			got, err := toPolicy(p)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != tc.want {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

// Short and malformed messages are errors, never panics.
func TestParseShort(t *testing.T) {
	s := stateSpec{src: "198.51.100.2", dst: "192.0.2.1", spi: 1, mode: 1, aead: "rfc4106(gcm(aes))", icv: 128, key: key(20, 1)}
	msg := s.msg()
	for n := 0; n < len(msg); n++ {
		_, _ = parseState(msg[:n])
		_, _ = parseSAID(msg[:n])
		_, _, _ = parseExpire(msg[:n])
		_, _ = parsePolicy(msg[:n])
		_, _ = parsePolicyDel(msg[:n])
		_, _, _ = parsePolExpire(msg[:n])
	}
	// a key length beyond the attribute
	bad := append([]byte(nil), msg...)
	i := bytes.Index(bad, []byte("rfc4106"))
	native.PutUint32(bad[i+64:], 4096)
	if _, err := parseState(bad); err == nil {
		t.Fatal("a key longer than its attribute was accepted")
	}
}
