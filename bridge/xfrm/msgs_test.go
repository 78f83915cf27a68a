package xfrm

import (
	"net/netip"

	"github.com/vishvananda/netlink/nl"
)

// Builders of the kernel's XFRM messages, as the kernel lays them out
// (include/uapi/linux/xfrm.h), for the tests.

type stateSpec struct {
	src, dst     string
	spi          uint32
	reqid        uint32
	mode         uint8
	proto        uint8 // 0: ESP
	aead         string
	icv          uint32
	crypt, auth  string
	trunc        uint32
	key, authKey []byte
	encap        *[2]uint16 // sport, dport
	encapType    uint16
	mark         *[2]uint32
	ifID         uint32
	window       uint8
	esnWindow    uint32 // with XFRM_STATE_ESN and XFRMA_REPLAY_ESN_VAL
	oseq, seq    uint32
	softBytes    uint64
	hardPackets  uint64
	dir          uint8
	addTime      uint64
}

func algoBytes(name string, key []byte, bits *uint32) []byte {
	var b [64]byte
	copy(b[:], name)
	out := append([]byte(nil), b[:]...)
	var l [4]byte
	native.PutUint32(l[:], uint32(len(key)*8))
	out = append(out, l[:]...)
	if bits != nil {
		native.PutUint32(l[:], *bits)
		out = append(out, l[:]...)
	}
	return append(out, key...)
}

func (s stateSpec) info() nl.XfrmUsersaInfo {
	src, dst := netip.MustParseAddr(s.src), netip.MustParseAddr(s.dst)
	var info nl.XfrmUsersaInfo
	info.Id.Daddr, info.Id.Spi, info.Id.Proto = xaddr(dst), htonl(s.spi), s.proto
	if s.proto == 0 {
		info.Id.Proto = 50
	}
	info.Saddr, info.Family, info.Reqid, info.Mode = xaddr(src), family(dst), s.reqid, s.mode
	info.ReplayWindow = s.window
	info.Lft = nl.XfrmLifetimeCfg{SoftByteLimit: xfrmInf, HardByteLimit: xfrmInf, SoftPacketLimit: xfrmInf, HardPacketLimit: xfrmInf}
	if s.softBytes != 0 {
		info.Lft.SoftByteLimit = s.softBytes
	}
	if s.hardPackets != 0 {
		info.Lft.HardPacketLimit = s.hardPackets
	}
	info.Curlft.AddTime = s.addTime
	if s.esnWindow != 0 {
		info.Flags |= nl.XFRM_STATE_ESN
	}
	return info
}

func (s stateSpec) attrs() []byte {
	var b []byte
	if s.aead != "" {
		b = putAttr(b, nl.XFRMA_ALG_AEAD, algoBytes(s.aead, s.key, &s.icv))
	}
	if s.crypt != "" {
		b = putAttr(b, nl.XFRMA_ALG_CRYPT, algoBytes(s.crypt, s.key, nil))
	}
	if s.auth != "" {
		b = putAttr(b, nl.XFRMA_ALG_AUTH, algoBytes(s.auth, s.authKey, nil))
		b = putAttr(b, nl.XFRMA_ALG_AUTH_TRUNC, algoBytes(s.auth, s.authKey, &s.trunc))
	}
	if s.encap != nil {
		t := nl.XfrmEncapTmpl{EncapType: udpEncapESPinUDP, EncapSport: htons(s.encap[0]), EncapDport: htons(s.encap[1])}
		if s.encapType != 0 {
			t.EncapType = s.encapType
		}
		b = putAttr(b, nl.XFRMA_ENCAP, structBytes(&t))
	}
	if s.mark != nil {
		b = putAttr(b, nl.XFRMA_MARK, markBytes(s.mark[0], s.mark[1]))
	}
	if s.ifID != 0 {
		v := make([]byte, 4)
		native.PutUint32(v, s.ifID)
		b = putAttr(b, nl.XFRMA_IF_ID, v)
	}
	if s.esnWindow != 0 {
		v := make([]byte, nl.SizeofXfrmReplayStateEsn+4*((s.esnWindow+31)/32))
		native.PutUint32(v, (s.esnWindow+31)/32)
		native.PutUint32(v[4:], s.oseq)
		native.PutUint32(v[8:], s.seq)
		native.PutUint32(v[20:], s.esnWindow)
		b = putAttr(b, nl.XFRMA_REPLAY_ESN_VAL, v)
	} else {
		r := nl.XfrmReplayState{OSeq: s.oseq, Seq: s.seq}
		b = putAttr(b, nl.XFRMA_REPLAY_VAL, structBytes(&r))
	}
	if s.dir != 0 {
		b = putAttr(b, nl.XFRMA_SA_DIR, []byte{s.dir})
	}
	return b
}

func (s stateSpec) msg() []byte {
	info := s.info()
	return append(structBytes(&info), s.attrs()...)
}

func (s stateSpec) delMsg() []byte {
	info := s.info()
	id := nl.XfrmUsersaId{Daddr: info.Id.Daddr, Spi: info.Id.Spi, Family: info.Family, Proto: info.Id.Proto}
	b := structBytes(&id)
	return putAttr(b, nl.XFRMA_SA, s.msg())
}

func (s stateSpec) expireMsg(hard bool) []byte {
	info := s.info()
	b := structBytes(&info)
	tail := make([]byte, 8)
	if hard {
		tail[0] = 1
	}
	return append(append(b, tail...), s.attrs()...)
}

type policySpec struct {
	src, dst  string // prefixes
	proto     uint8
	dport     uint16
	dportMask uint16
	dir       uint8
	prio      uint32
	action    uint8
	tmpls     []nl.XfrmUserTmpl
	mark      *[2]uint32
	ifID      uint32
}

func tmpl(src, dst string, reqid uint32, mode uint8, proto uint8) nl.XfrmUserTmpl {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var t nl.XfrmUserTmpl
	t.XfrmId.Daddr, t.XfrmId.Proto, t.Family, t.Saddr, t.Reqid, t.Mode = xaddr(d), proto, family(d), xaddr(s), reqid, mode
	t.Aalgos, t.Ealgos, t.Calgos = ^uint32(0), ^uint32(0), ^uint32(0)
	return t
}

func (p policySpec) sel() nl.XfrmSelector {
	src, dst := netip.MustParsePrefix(p.src), netip.MustParsePrefix(p.dst)
	var s nl.XfrmSelector
	s.Saddr, s.Daddr, s.Family = xaddr(src.Addr()), xaddr(dst.Addr()), family(dst.Addr())
	s.PrefixlenS, s.PrefixlenD, s.Proto = uint8(src.Bits()), uint8(dst.Bits()), p.proto
	s.Dport, s.DportMask = htons(p.dport), htons(p.dportMask)
	return s
}

func (p policySpec) attrs() []byte {
	var b []byte
	if len(p.tmpls) > 0 {
		var t []byte
		for i := range p.tmpls {
			t = append(t, structBytes(&p.tmpls[i])...)
		}
		b = putAttr(b, nl.XFRMA_TMPL, t)
	}
	if p.mark != nil {
		b = putAttr(b, nl.XFRMA_MARK, markBytes(p.mark[0], p.mark[1]))
	}
	if p.ifID != 0 {
		v := make([]byte, 4)
		native.PutUint32(v, p.ifID)
		b = putAttr(b, nl.XFRMA_IF_ID, v)
	}
	return b
}

func (p policySpec) msg() []byte {
	info := nl.XfrmUserpolicyInfo{Sel: p.sel(), Priority: p.prio, Dir: p.dir, Action: p.action}
	return append(structBytes(&info), p.attrs()...)
}

func (p policySpec) delMsg() []byte {
	id := nl.XfrmUserpolicyId{Sel: p.sel(), Dir: p.dir}
	info := nl.XfrmUserpolicyInfo{Sel: p.sel(), Priority: p.prio, Dir: p.dir, Action: p.action}
	b := putAttr(structBytes(&id), nl.XFRMA_POLICY, structBytes(&info))
	return append(b, p.attrs()...)
}
