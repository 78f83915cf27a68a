package xfrm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
)

// Parsing of the kernel's XFRM messages (include/uapi/linux/xfrm.h): a
// fixed header (xfrm_usersa_info, xfrm_userpolicy_info, …) then netlink
// attributes. The fixed structs are vishvananda/netlink's Go mirrors
// (nl.XfrmUsersaInfo, …); attributes are walked here, so that a short or
// malformed message is an error and never a panic, and key bytes are only
// ever referenced in the caller's buffer (which the caller wipes).

var errShort = errors.New("message too short")

var native = binary.NativeEndian

// attr is one netlink attribute; data aliases the message.
type attr struct {
	typ  uint16
	data []byte
}

func parseAttrs(b []byte) ([]attr, error) {
	var out []attr
	for len(b) >= 4 {
		l := int(native.Uint16(b[0:2]))
		t := native.Uint16(b[2:4]) & nl.NLA_TYPE_MASK
		if l < 4 || l > len(b) {
			return out, fmt.Errorf("attribute %d: length %d of %d bytes left: %w", t, l, len(b), errShort)
		}
		out = append(out, attr{typ: t, data: b[4:l]})
		al := (l + 3) &^ 3
		if al > len(b) {
			al = len(b)
		}
		b = b[al:]
	}
	return out, nil
}

// algo is an algorithm attribute: name, key (aliasing the message) and
// the ICV (AEAD) or truncation (integrity) length in bits.
type algo struct {
	name string
	key  []byte
	bits uint32
}

// parseAlgo reads struct xfrm_algo (hasBits false) or xfrm_algo_auth /
// xfrm_algo_aead (hasBits true: a u32 after the key length).
func parseAlgo(b []byte, hasBits bool) (*algo, error) {
	hdr := 68
	if hasBits {
		hdr = 72
	}
	if len(b) < hdr {
		return nil, errShort
	}
	a := &algo{name: cstring(b[:64])}
	keyBits := native.Uint32(b[64:68])
	if hasBits {
		a.bits = native.Uint32(b[68:72])
	}
	n := int((keyBits + 7) / 8)
	if n > len(b)-hdr {
		return nil, fmt.Errorf("algorithm %q: %d-bit key in %d bytes: %w", a.name, keyBits, len(b)-hdr, errShort)
	}
	a.key = b[hdr : hdr+n]
	return a, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// esn is struct xfrm_replay_state_esn without its bitmap.
type esn struct {
	bmpLen, oseq, seq, oseqHi, seqHi, window uint32
}

// kstate is an XFRM state as a message carries it.
type kstate struct {
	info              nl.XfrmUsersaInfo
	aead, crypt, auth *algo
	encap             *nl.XfrmEncapTmpl
	mark, markMask    uint32
	ifID              uint32
	esn               *esn
	replay            *nl.XfrmReplayState
	dir               uint8 // XFRMA_SA_DIR (Linux 6.10+): 1 in, 2 out, 0 unknown
	other             []uint16
	// every key the message holds: the kernel sends the integrity key
	// twice (XFRMA_ALG_AUTH and XFRMA_ALG_AUTH_TRUNC)
	keys [][]byte
}

// XFRMA_SA_DIR values.
const (
	saDirIn  = 1
	saDirOut = 2
)

// parseState reads xfrm_usersa_info and its attributes (NEWSA, UPDSA,
// dumps).
func parseState(b []byte) (*kstate, error) {
	if len(b) < nl.SizeofXfrmUsersaInfo {
		return nil, fmt.Errorf("xfrm_usersa_info: %d bytes: %w", len(b), errShort)
	}
	s := &kstate{info: *nl.DeserializeXfrmUsersaInfo(b)}
	attrs, err := parseAttrs(b[nl.SizeofXfrmUsersaInfo:])
	if err != nil {
		return nil, err
	}
	if err := s.setAttrs(attrs); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *kstate) setAttrs(attrs []attr) error {
	var err error
	for _, a := range attrs {
		switch a.typ {
		case nl.XFRMA_ALG_AEAD:
			s.aead, err = parseAlgo(a.data, true)
		case nl.XFRMA_ALG_CRYPT:
			s.crypt, err = parseAlgo(a.data, false)
		case nl.XFRMA_ALG_AUTH_TRUNC:
			s.auth, err = parseAlgo(a.data, true)
		case nl.XFRMA_ALG_AUTH:
			// the kernel sends both; the truncated form says the length
			if s.auth == nil {
				s.auth, err = parseAlgo(a.data, false)
				if err == nil {
					s.auth.bits = legacyTrunc(s.auth.name)
				}
			}
		case nl.XFRMA_ENCAP:
			if len(a.data) < nl.SizeofXfrmEncapTmpl {
				return fmt.Errorf("XFRMA_ENCAP: %w", errShort)
			}
			e := *nl.DeserializeXfrmEncapTmpl(a.data)
			s.encap = &e
		case nl.XFRMA_MARK:
			if len(a.data) < 8 {
				return fmt.Errorf("XFRMA_MARK: %w", errShort)
			}
			s.mark, s.markMask = native.Uint32(a.data), native.Uint32(a.data[4:])
		case nl.XFRMA_IF_ID:
			if len(a.data) < 4 {
				return fmt.Errorf("XFRMA_IF_ID: %w", errShort)
			}
			s.ifID = native.Uint32(a.data)
		case nl.XFRMA_REPLAY_ESN_VAL:
			if len(a.data) < nl.SizeofXfrmReplayStateEsn {
				return fmt.Errorf("XFRMA_REPLAY_ESN_VAL: %w", errShort)
			}
			d := a.data
			s.esn = &esn{bmpLen: native.Uint32(d), oseq: native.Uint32(d[4:]), seq: native.Uint32(d[8:]),
				oseqHi: native.Uint32(d[12:]), seqHi: native.Uint32(d[16:]), window: native.Uint32(d[20:])}
		case nl.XFRMA_REPLAY_VAL:
			if len(a.data) < nl.SizeofXfrmReplayState {
				return fmt.Errorf("XFRMA_REPLAY_VAL: %w", errShort)
			}
			r := *nl.DeserializeXfrmReplayState(a.data)
			s.replay = &r
		case nl.XFRMA_SA_DIR:
			if len(a.data) >= 1 {
				s.dir = a.data[0]
			}
		case nl.XFRMA_LTIME_VAL, nl.XFRMA_SRCADDR, nl.XFRMA_LASTUSED, nl.XFRMA_PAD,
			nl.XFRMA_REPLAY_THRESH, nl.XFRMA_ETIMER_THRESH, nl.XFRMA_SA_EXTRA_FLAGS,
			nl.XFRMA_TFCPAD, nl.XFRMA_SET_MARK, nl.XFRMA_SET_MARK_MASK, nl.XFRMA_MTIMER_THRESH,
			nl.XFRMA_OFFLOAD_DEV, nl.XFRMA_NAT_KEEPALIVE_INTERVAL, nl.XFRMA_SA_PCPU:
		default:
			s.other = append(s.other, a.typ)
		}
		if err != nil {
			return err
		}
		switch a.typ {
		case nl.XFRMA_ALG_AEAD, nl.XFRMA_ALG_CRYPT, nl.XFRMA_ALG_AUTH, nl.XFRMA_ALG_AUTH_TRUNC, nl.XFRMA_ALG_COMP:
			s.keys = append(s.keys, a.data)
		}
	}
	return nil
}

// legacyTrunc is the kernel's truncation for an integrity algorithm given
// as XFRMA_ALG_AUTH (net/xfrm/xfrm_algo.c, icv_truncbits).
func legacyTrunc(name string) uint32 {
	switch name {
	case "digest_null":
		return 0
	case "hmac(sha256)":
		return 96
	case "hmac(sha384)":
		return 192
	case "hmac(sha512)":
		return 256
	}
	return 96
}

// wipe zeroes the algorithm attributes (names and keys) of the message.
func (s *kstate) wipe() {
	for _, k := range s.keys {
		clear(k)
	}
}

// said is the state's ID as the model keys it.
func (s *kstate) said() (id saKey) {
	return saKey{dst: addr(s.info.Id.Daddr, s.info.Family), spi: ntohl(s.info.Id.Spi), proto: s.info.Id.Proto, mark: s.mark}
}

// saKey mirrors model.SAID (kept apart so that parse has no model types).
type saKey struct {
	dst   netip.Addr
	spi   uint32
	proto uint8
	mark  uint32
}

// parseSAID reads a DELSA notification: xfrm_usersa_id, then attributes
// (XFRMA_SA with the whole state, which carries the keys too: the caller
// wipes the buffer).
func parseSAID(b []byte) (saKey, error) {
	if len(b) < nl.SizeofXfrmUsersaId {
		return saKey{}, fmt.Errorf("xfrm_usersa_id: %w", errShort)
	}
	id := nl.DeserializeXfrmUsersaId(b)
	k := saKey{dst: addr(id.Daddr, id.Family), spi: ntohl(id.Spi), proto: id.Proto}
	attrs, err := parseAttrs(b[nl.SizeofXfrmUsersaId:])
	if err != nil {
		return k, err
	}
	for _, a := range attrs {
		if a.typ == nl.XFRMA_MARK && len(a.data) >= 8 {
			k.mark = native.Uint32(a.data)
		}
	}
	return k, nil
}

// sizeofUserExpire is struct xfrm_user_expire: the state and a u8 hard,
// padded to 8 bytes.
const sizeofUserExpire = nl.SizeofXfrmUsersaInfo + 8

// parseExpire reads XFRM_MSG_EXPIRE.
func parseExpire(b []byte) (*kstate, bool, error) {
	if len(b) < sizeofUserExpire {
		return nil, false, fmt.Errorf("xfrm_user_expire: %w", errShort)
	}
	s := &kstate{info: *nl.DeserializeXfrmUsersaInfo(b)}
	hard := b[nl.SizeofXfrmUsersaInfo] != 0
	attrs, err := parseAttrs(b[sizeofUserExpire:])
	if err == nil {
		err = s.setAttrs(attrs)
	}
	return s, hard, err
}

// kpolicy is an XFRM policy as a message carries it.
type kpolicy struct {
	info           nl.XfrmUserpolicyInfo
	tmpls          []nl.XfrmUserTmpl
	mark, markMask uint32
	ifID           uint32
	subType        bool // XFRM_POLICY_TYPE_SUB (Mobile IPv6): not ours to mirror
}

// parsePolicy reads xfrm_userpolicy_info and its attributes (NEWPOLICY,
// UPDPOLICY, dumps).
func parsePolicy(b []byte) (*kpolicy, error) {
	if len(b) < nl.SizeofXfrmUserpolicyInfo {
		return nil, fmt.Errorf("xfrm_userpolicy_info: %d bytes: %w", len(b), errShort)
	}
	p := &kpolicy{info: *nl.DeserializeXfrmUserpolicyInfo(b)}
	attrs, err := parseAttrs(b[nl.SizeofXfrmUserpolicyInfo:])
	if err != nil {
		return nil, err
	}
	return p, p.setAttrs(attrs)
}

func (p *kpolicy) setAttrs(attrs []attr) error {
	for _, a := range attrs {
		switch a.typ {
		case nl.XFRMA_TMPL:
			d := a.data
			if len(d)%nl.SizeofXfrmUserTmpl != 0 {
				return fmt.Errorf("XFRMA_TMPL: %d bytes: %w", len(d), errShort)
			}
			for ; len(d) > 0; d = d[nl.SizeofXfrmUserTmpl:] {
				p.tmpls = append(p.tmpls, *nl.DeserializeXfrmUserTmpl(d))
			}
		case nl.XFRMA_MARK:
			if len(a.data) < 8 {
				return fmt.Errorf("XFRMA_MARK: %w", errShort)
			}
			p.mark, p.markMask = native.Uint32(a.data), native.Uint32(a.data[4:])
		case nl.XFRMA_IF_ID:
			if len(a.data) < 4 {
				return fmt.Errorf("XFRMA_IF_ID: %w", errShort)
			}
			p.ifID = native.Uint32(a.data)
		case nl.XFRMA_POLICY_TYPE:
			if len(a.data) >= 1 && a.data[0] != 0 {
				p.subType = true
			}
		}
	}
	return nil
}

// parsePolicyDel reads a DELPOLICY notification: xfrm_userpolicy_id, then
// XFRMA_POLICY with the whole policy and the policy's other attributes.
func parsePolicyDel(b []byte) (*kpolicy, error) {
	if len(b) < nl.SizeofXfrmUserpolicyId {
		return nil, fmt.Errorf("xfrm_userpolicy_id: %w", errShort)
	}
	id := nl.DeserializeXfrmUserpolicyId(b)
	attrs, err := parseAttrs(b[nl.SizeofXfrmUserpolicyId:])
	if err != nil {
		return nil, err
	}
	p := &kpolicy{}
	p.info.Sel, p.info.Dir, p.info.Index = id.Sel, id.Dir, id.Index
	for _, a := range attrs {
		if a.typ == nl.XFRMA_POLICY && len(a.data) >= nl.SizeofXfrmUserpolicyInfo {
			p.info = *nl.DeserializeXfrmUserpolicyInfo(a.data)
		}
	}
	return p, p.setAttrs(attrs)
}

// sizeofUserPolexpire is struct xfrm_user_polexpire: the policy and a u8
// hard, padded.
const sizeofUserPolexpire = nl.SizeofXfrmUserpolicyInfo + 8

// parsePolExpire reads XFRM_MSG_POLEXPIRE.
func parsePolExpire(b []byte) (*kpolicy, bool, error) {
	if len(b) < sizeofUserPolexpire {
		return nil, false, fmt.Errorf("xfrm_user_polexpire: %w", errShort)
	}
	p := &kpolicy{info: *nl.DeserializeXfrmUserpolicyInfo(b)}
	hard := b[nl.SizeofXfrmUserpolicyInfo] != 0
	attrs, err := parseAttrs(b[sizeofUserPolexpire:])
	if err == nil {
		err = p.setAttrs(attrs)
	}
	return p, hard, err
}

func addr(a nl.XfrmAddress, family uint16) netip.Addr {
	switch family {
	case nl.FAMILY_V4:
		return netip.AddrFrom4([4]byte(a[:4]))
	case nl.FAMILY_V6:
		return netip.AddrFrom16(a)
	}
	return netip.Addr{}
}

func ntohl(v uint32) uint32 {
	var b [4]byte
	native.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

func ntohs(v uint16) uint16 {
	var b [2]byte
	native.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func htonl(v uint32) uint32 { return ntohl(v) }
func htons(v uint16) uint16 { return ntohs(v) }
