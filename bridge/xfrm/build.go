package xfrm

import (
	"net/netip"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
)

// Requests swanpathd sends to the kernel's XFRM: counters back to an SA
// (NEWAE), expiries only the fast path can see (EXPIRE), and its bypass
// policies (UPDPOLICY, DELPOLICY). Each returns the payload after the
// netlink header.

func putAttr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	var h [4]byte
	native.PutUint16(h[0:], uint16(l))
	native.PutUint16(h[2:], typ)
	b = append(b, h[:]...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func structBytes[T any](v *T) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))...)
}

func xaddr(a netip.Addr) (x nl.XfrmAddress) {
	if a.Is4() {
		b := a.As4()
		copy(x[:], b[:])
	} else if a.IsValid() {
		x = a.As16()
	}
	return x
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return nl.FAMILY_V4
	}
	return nl.FAMILY_V6
}

// aeCounters is what NEWAE writes to the kernel's SA.
type aeCounters struct {
	bytes, packets   uint64
	addTime, useTime uint64
	oseq, seq        uint64 // outbound: last number sent; inbound: highest received
}

// XFRM_AE_* flags of struct xfrm_aevent_id.
const (
	xfrmAERval = 1
	xfrmAELval = 4
)

// newAE builds XFRM_MSG_NEWAE (with NLM_F_REPLACE, see xfrm_new_ae in
// net/xfrm/xfrm_user.c): struct xfrm_aevent_id, the current lifetime
// (XFRMA_LTIME_VAL: all four fields are replaced, so the kernel's add time
// goes back as it was) and the replay state in the form the SA has
// (XFRMA_REPLAY_ESN_VAL with the SA's bitmap length, or XFRMA_REPLAY_VAL).
func newAE(r *saRec, c aeCounters) []byte {
	var id struct {
		Daddr  nl.XfrmAddress
		Spi    uint32
		Family uint16
		Proto  uint8
		Pad    uint8
		Saddr  nl.XfrmAddress
		Flags  uint32
		Reqid  uint32
	}
	id.Daddr, id.Spi, id.Family, id.Proto = xaddr(r.id.Dst), htonl(r.id.SPI), family(r.id.Dst), r.id.Proto
	id.Saddr, id.Flags, id.Reqid = xaddr(r.src), xfrmAERval|xfrmAELval, r.reqid
	b := structBytes(&id)
	cur := nl.XfrmLifetimeCur{Bytes: c.bytes, Packets: c.packets, AddTime: c.addTime, UseTime: c.useTime}
	b = putAttr(b, nl.XFRMA_LTIME_VAL, structBytes(&cur))
	if r.esn != nil {
		v := make([]byte, nl.SizeofXfrmReplayStateEsn+4*int(r.esn.bmpLen))
		native.PutUint32(v[0:], r.esn.bmpLen)
		native.PutUint32(v[4:], uint32(c.oseq))
		native.PutUint32(v[8:], uint32(c.seq))
		native.PutUint32(v[12:], uint32(c.oseq>>32))
		native.PutUint32(v[16:], uint32(c.seq>>32))
		native.PutUint32(v[20:], r.esn.window)
		b = putAttr(b, nl.XFRMA_REPLAY_ESN_VAL, v)
	} else {
		rs := nl.XfrmReplayState{OSeq: uint32(c.oseq), Seq: uint32(c.seq)}
		b = putAttr(b, nl.XFRMA_REPLAY_VAL, structBytes(&rs))
	}
	if r.id.Mark != 0 || r.markMask != 0 {
		b = putAttr(b, nl.XFRMA_MARK, markBytes(r.id.Mark, r.markMask))
	}
	return b
}

func markBytes(v, m uint32) []byte {
	b := make([]byte, 8)
	native.PutUint32(b, v)
	native.PutUint32(b[4:], m)
	return b
}

// expireMsg builds XFRM_MSG_EXPIRE for an SA: the kernel (xfrm_add_sa_expire)
// tells every listener, the IKE daemon among them, that it expired, as if
// its own lifetime check had fired; a hard expiry also deletes its SA.
func expireMsg(r *saRec, hard bool) []byte {
	var info nl.XfrmUsersaInfo
	info.Id.Daddr, info.Id.Spi, info.Id.Proto = xaddr(r.id.Dst), htonl(r.id.SPI), r.id.Proto
	info.Saddr, info.Family, info.Reqid = xaddr(r.src), family(r.id.Dst), r.reqid
	b := structBytes(&info)
	tail := make([]byte, sizeofUserExpire-nl.SizeofXfrmUsersaInfo)
	if hard {
		tail[0] = 1
	}
	b = append(b, tail...)
	if r.id.Mark != 0 || r.markMask != 0 {
		b = putAttr(b, nl.XFRMA_MARK, markBytes(r.id.Mark, r.markMask))
	}
	return b
}

// bypassAdd builds XFRM_MSG_UPDPOLICY for one bypass policy.
func bypassAdd(k bypassKey, prio uint32) []byte {
	info := nl.XfrmUserpolicyInfo{Sel: k.sel, Priority: prio, Dir: k.dir, Action: xfrmPolicyAllow}
	info.Lft = nl.XfrmLifetimeCfg{SoftByteLimit: xfrmInf, HardByteLimit: xfrmInf,
		SoftPacketLimit: xfrmInf, HardPacketLimit: xfrmInf}
	b := structBytes(&info)
	return putAttr(b, nl.XFRMA_MARK, markBytes(k.mark, bypassMarkMask))
}

// bypassDel builds XFRM_MSG_DELPOLICY for one bypass policy.
func bypassDel(k bypassKey) []byte {
	id := nl.XfrmUserpolicyId{Sel: k.sel, Dir: k.dir}
	b := structBytes(&id)
	return putAttr(b, nl.XFRMA_MARK, markBytes(k.mark, bypassMarkMask))
}
