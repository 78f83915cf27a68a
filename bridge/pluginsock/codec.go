package pluginsock

// Frame and attribute codec for docs/plugin-protocol.md. Decoding takes
// bytes from a socket peer: it never panics, copies what it keeps (keys
// never alias the read buffer), and every error names what is wrong.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed plugin message")

// Message is one frame. Which of SA, Update, Policy, Result, Event and Hello
// are meaningful depends on Type (see docs/plugin-protocol.md).
type Message struct {
	Type Type
	Seq  uint32

	// SA: ADD_SA (everything); GET_SPI (Src, Dst, Proto); UPDATE_SA,
	// QUERY_SA, DEL_SA (Src and SAID, MarkMask, IfID).
	SA model.SA
	// Update: UPDATE_SA.
	Update SAUpdate
	// Policy: ADD_POLICY, QUERY_POLICY, DEL_POLICY.
	Policy model.Policy
	// Result: RESULT.
	Result Result
	// Event: EXPIRE, ACQUIRE, MAPPING.
	Event Event
	// Hello: HELLO.
	Hello Hello
	// Replay: REPLAY_DONE.
	Replay ReplayDone
}

// SAUpdate is what UPDATE_SA changes.
type SAUpdate struct {
	NewSrc, NewDst         netip.Addr
	NewSrcPort, NewDstPort uint16
	Encap                  bool
}

// Result answers a request.
type Result struct {
	Status  Status
	Message string
	SPI     uint32 // GET_SPI
	Stats   model.SAStats
}

// Hello introduces the plugin.
type Hello struct {
	Name string
	PID  uint32
}

// ReplayDone ends the plugin's replay after a (re)connect: how many SAs
// and policies it sent again, and how many of them swanpathd refused.
type ReplayDone struct {
	Replayed uint32
	Failed   uint32
}

// Header is a decoded frame header.
type Header struct {
	Version uint8
	Type    Type
	Flags   uint16
	Seq     uint32
	Length  uint32
}

// ParseHeader checks a frame header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("%w: header truncated: %d of %d bytes", ErrMalformed, len(b), HeaderLen)
	}
	h := Header{
		Version: b[0],
		Type:    Type(b[1]),
		Flags:   binary.BigEndian.Uint16(b[2:]),
		Seq:     binary.BigEndian.Uint32(b[4:]),
		Length:  binary.BigEndian.Uint32(b[8:]),
	}
	if h.Version != Version {
		return h, fmt.Errorf("%w: version %d, want %d", ErrMalformed, h.Version, Version)
	}
	if h.Length > MaxPayload {
		return h, fmt.Errorf("%w: %s payload of %d bytes exceeds %d", ErrMalformed, h.Type, h.Length, MaxPayload)
	}
	return h, nil
}

// Decode decodes exactly one frame (header and payload).
func Decode(b []byte) (*Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if uint32(len(b)-HeaderLen) != h.Length {
		return nil, fmt.Errorf("%w: %s frame has %d payload bytes, header says %d", ErrMalformed, h.Type, len(b)-HeaderLen, h.Length)
	}
	return decodePayload(h, b[HeaderLen:])
}

// ReadMessage reads and decodes one frame from r. Its own buffer is wiped
// before it returns; a buffering r (bufio.Reader) keeps copies of what it
// read, so frames that carry keys are read with a frameReader straight
// from the connection instead (see Server).
func ReadMessage(r io.Reader) (*Message, error) {
	return (&frameReader{r: r}).read()
}

// frameReader reads frames straight from r into one buffer it reuses and
// wipes what each frame left there, whether it decoded or not. A
// bufio.Reader cannot be used for this: it keeps the bytes it handed out
// (an ADD_SA's keys) until later reads overwrite them, and has no way to
// clear them. Reading header and payload separately costs one more read
// per frame; the plugin sends one request at a time anyway.
type frameReader struct {
	r   io.Reader
	buf []byte // header and payload of the current frame; zero in between
}

func (fr *frameReader) read() (*Message, error) {
	hb := fr.grow(HeaderLen)
	defer clear(hb)
	if _, err := io.ReadFull(fr.r, hb); err != nil {
		return nil, err
	}
	h, err := ParseHeader(hb)
	if err != nil {
		return nil, err
	}
	payload := fr.grow(int(h.Length))
	defer clear(payload)
	if _, err := io.ReadFull(fr.r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: %s payload: %w", ErrMalformed, h.Type, err)
	}
	return decodePayload(h, payload)
}

// grow returns n bytes of the buffer, replacing it (wiped) by a larger one
// when it is too small. At most HeaderLen+MaxPayload bytes.
func (fr *frameReader) grow(n int) []byte {
	if cap(fr.buf) < n {
		clear(fr.buf[:cap(fr.buf)])
		fr.buf = make([]byte, max(n, 1024))
	}
	return fr.buf[:n]
}

// attrs collects every attribute of a payload; decodePayload then picks
// what the message type uses.
type attrs struct {
	sa     model.SA
	upd    SAUpdate
	pol    model.Policy
	res    Result
	hard   bool
	hello  Hello
	replay ReplayDone
}

type attrKind uint8

const (
	kU8 attrKind = iota
	kU16
	kU32
	kU64
	kAddr
	kPrefix
	kRange
	kBytes
)

type attrSpec struct {
	name string
	kind attrKind
}

var attrSpecs = map[uint16]attrSpec{
	attrSrc: {"SRC", kAddr}, attrDst: {"DST", kAddr}, attrSPI: {"SPI", kU32},
	attrProto: {"PROTO", kU8}, attrMode: {"MODE", kU8}, attrReqid: {"REQID", kU32},
	attrMark: {"MARK", kU32}, attrMarkMask: {"MARK_MASK", kU32}, attrIfID: {"IF_ID", kU32},
	attrInbound: {"INBOUND", kU8}, attrEncap: {"ENCAP", kU8},
	attrSrcPort: {"SRC_PORT", kU16}, attrDstPort: {"DST_PORT", kU16},
	attrEncAlg: {"ENC_ALG", kU16}, attrEncKey: {"ENC_KEY", kBytes},
	attrIntAlg: {"INT_ALG", kU16}, attrIntKey: {"INT_KEY", kBytes},
	attrICVLen: {"ICV_LEN", kU8}, attrReplayWindow: {"REPLAY_WINDOW", kU32}, attrESN: {"ESN", kU8},
	attrSoftBytes: {"SOFT_BYTES", kU64}, attrSoftPackets: {"SOFT_PACKETS", kU64}, attrSoftTime: {"SOFT_TIME", kU64},
	attrHardBytes: {"HARD_BYTES", kU64}, attrHardPackets: {"HARD_PACKETS", kU64}, attrHardTime: {"HARD_TIME", kU64},
	attrNewSrc: {"NEW_SRC", kAddr}, attrNewDst: {"NEW_DST", kAddr},
	attrNewSrcPort: {"NEW_SRC_PORT", kU16}, attrNewDstPort: {"NEW_DST_PORT", kU16}, attrNewEncap: {"NEW_ENCAP", kU8},
	attrSelSrc: {"SEL_SRC", kPrefix}, attrSelDst: {"SEL_DST", kPrefix}, attrSelProto: {"SEL_PROTO", kU8},
	attrSelSport: {"SEL_SPORT", kRange}, attrSelDport: {"SEL_DPORT", kRange},
	attrDir: {"DIR", kU8}, attrAction: {"ACTION", kU8}, attrPriority: {"PRIORITY", kU32},
	attrTmplSrc: {"TMPL_SRC", kAddr}, attrTmplDst: {"TMPL_DST", kAddr},
	attrStatus: {"STATUS", kU32}, attrMessage: {"MESSAGE", kBytes},
	attrBytes: {"BYTES", kU64}, attrPackets: {"PACKETS", kU64}, attrUseTime: {"USE_TIME", kU64},
	attrHard: {"HARD", kU8}, attrName: {"NAME", kBytes}, attrPID: {"PID", kU32},
	attrReplayed: {"REPLAYED", kU32}, attrReplayFailed: {"REPLAY_FAILED", kU32},
}

// attrValue is one decoded attribute value.
type attrValue struct {
	u    uint64
	addr netip.Addr
	pfx  netip.Prefix
	lo   uint16
	hi   uint16
	raw  []byte // aliases the payload; copy before keeping
}

func parseValue(typ uint16, spec attrSpec, v []byte) (attrValue, error) {
	var out attrValue
	bad := func(want string) (attrValue, error) {
		return out, fmt.Errorf("%w: attribute %s (%d): length %d, want %s", ErrMalformed, spec.name, typ, len(v), want)
	}
	switch spec.kind {
	case kU8:
		if len(v) != 1 {
			return bad("1")
		}
		out.u = uint64(v[0])
	case kU16:
		if len(v) != 2 {
			return bad("2")
		}
		out.u = uint64(binary.BigEndian.Uint16(v))
	case kU32:
		if len(v) != 4 {
			return bad("4")
		}
		out.u = uint64(binary.BigEndian.Uint32(v))
	case kU64:
		if len(v) != 8 {
			return bad("8")
		}
		out.u = binary.BigEndian.Uint64(v)
	case kAddr:
		a, ok := addrFrom(v)
		if !ok {
			return bad("4 or 16")
		}
		out.addr = a
	case kPrefix:
		if len(v) != 5 && len(v) != 17 {
			return bad("5 or 17")
		}
		a, _ := addrFrom(v[1:])
		if int(v[0]) > a.BitLen() {
			return out, fmt.Errorf("%w: attribute %s: prefix length %d exceeds %d", ErrMalformed, spec.name, v[0], a.BitLen())
		}
		out.pfx = netip.PrefixFrom(a, int(v[0]))
	case kRange:
		if len(v) != 4 {
			return bad("4")
		}
		out.lo = binary.BigEndian.Uint16(v)
		out.hi = binary.BigEndian.Uint16(v[2:])
	case kBytes:
		out.raw = v
	}
	return out, nil
}

func addrFrom(v []byte) (netip.Addr, bool) {
	switch len(v) {
	case 4:
		return netip.AddrFrom4([4]byte(v)), true
	case 16:
		return netip.AddrFrom16([16]byte(v)), true
	}
	return netip.Addr{}, false
}

// seconds converts a wire lifetime to a Duration, saturating.
func seconds(s uint64) time.Duration {
	const maxSecs = uint64(math.MaxInt64 / int64(time.Second))
	if s > maxSecs {
		s = maxSecs
	}
	return time.Duration(s) * time.Second
}

func (a *attrs) set(typ uint16, v attrValue) {
	u := v.u
	switch typ {
	case attrSrc:
		a.sa.Src = v.addr
	case attrDst:
		a.sa.Dst = v.addr
	case attrSPI:
		a.sa.SPI, a.pol.SPI, a.res.SPI = uint32(u), uint32(u), uint32(u)
	case attrProto:
		a.sa.Proto = uint8(u)
	case attrMode:
		a.sa.Mode, a.pol.Mode = model.Mode(u), model.Mode(u)
	case attrReqid:
		a.sa.Reqid, a.pol.Reqid = uint32(u), uint32(u)
	case attrMark:
		a.sa.Mark, a.pol.Mark = uint32(u), uint32(u)
	case attrMarkMask:
		a.sa.MarkMask, a.pol.MarkMask = uint32(u), uint32(u)
	case attrIfID:
		a.sa.IfID, a.pol.IfID = uint32(u), uint32(u)
	case attrInbound:
		a.sa.Inbound = u != 0
	case attrEncap:
		a.sa.Encap = u != 0
	case attrSrcPort:
		a.sa.SrcPort = uint16(u)
	case attrDstPort:
		a.sa.DstPort = uint16(u)
	case attrEncAlg:
		a.sa.EncAlg = uint16(u)
	case attrEncKey:
		a.sa.EncKey.Wipe()
		a.sa.EncKey = append(model.Key{}, v.raw...)
	case attrIntAlg:
		a.sa.IntAlg = uint16(u)
	case attrIntKey:
		a.sa.IntKey.Wipe()
		a.sa.IntKey = append(model.Key{}, v.raw...)
	case attrICVLen:
		a.sa.ICVLen = uint8(u)
	case attrReplayWindow:
		a.sa.ReplayWindow = uint32(u)
	case attrESN:
		a.sa.ESN = u != 0
	case attrSoftBytes:
		a.sa.Soft.Bytes = u
	case attrSoftPackets:
		a.sa.Soft.Packets = u
	case attrSoftTime:
		a.sa.Soft.Time = seconds(u)
	case attrHardBytes:
		a.sa.Hard.Bytes = u
	case attrHardPackets:
		a.sa.Hard.Packets = u
	case attrHardTime:
		a.sa.Hard.Time = seconds(u)
	case attrNewSrc:
		a.upd.NewSrc = v.addr
	case attrNewDst:
		a.upd.NewDst = v.addr
	case attrNewSrcPort:
		a.upd.NewSrcPort = uint16(u)
	case attrNewDstPort:
		a.upd.NewDstPort = uint16(u)
	case attrNewEncap:
		a.upd.Encap = u != 0
	case attrSelSrc:
		a.pol.Sel.Src = v.pfx
	case attrSelDst:
		a.pol.Sel.Dst = v.pfx
	case attrSelProto:
		a.pol.Sel.Proto = uint8(u)
	case attrSelSport:
		a.pol.Sel.SrcPortLo, a.pol.Sel.SrcPortHi = v.lo, v.hi
	case attrSelDport:
		a.pol.Sel.DstPortLo, a.pol.Sel.DstPortHi = v.lo, v.hi
	case attrDir:
		a.pol.Dir = model.Dir(u)
	case attrAction:
		a.pol.Action = model.PolicyAction(u)
	case attrPriority:
		a.pol.Priority = uint32(u)
	case attrTmplSrc:
		a.pol.TmplSrc = v.addr
	case attrTmplDst:
		a.pol.TmplDst = v.addr
	case attrStatus:
		a.res.Status = Status(u)
	case attrMessage:
		a.res.Message = string(v.raw)
	case attrBytes:
		a.res.Stats.Bytes = u
	case attrPackets:
		a.res.Stats.Packets = u
	case attrUseTime:
		a.res.Stats.LastUse = unixTime(u)
	case attrHard:
		a.hard = u != 0
	case attrName:
		a.hello.Name = string(v.raw)
	case attrPID:
		a.hello.PID = uint32(u)
	case attrReplayed:
		a.replay.Replayed = uint32(u)
	case attrReplayFailed:
		a.replay.Failed = uint32(u)
	}
}

func unixTime(u uint64) time.Time {
	if u == 0 {
		return time.Time{}
	}
	if u > math.MaxInt64 {
		u = math.MaxInt64
	}
	return time.Unix(int64(u), 0)
}

func decodePayload(h Header, p []byte) (*Message, error) {
	var a attrs
	// Absent port ranges mean "any".
	a.pol.Sel.SrcPortHi, a.pol.Sel.DstPortHi = 0xffff, 0xffff
	for off := 0; off < len(p); {
		if len(p)-off < 4 {
			a.sa.Wipe()
			return nil, fmt.Errorf("%w: %s: attribute header truncated at offset %d", ErrMalformed, h.Type, off)
		}
		typ := binary.BigEndian.Uint16(p[off:])
		n := int(binary.BigEndian.Uint16(p[off+2:]))
		off += 4
		if n > len(p)-off {
			a.sa.Wipe()
			return nil, fmt.Errorf("%w: %s: attribute %d at offset %d: length %d runs past the payload end (%d bytes left)",
				ErrMalformed, h.Type, typ, off-4, n, len(p)-off)
		}
		val := p[off : off+n]
		off += n
		spec, known := attrSpecs[typ]
		if !known {
			continue // forward compatible
		}
		v, err := parseValue(typ, spec, val)
		if err != nil {
			a.sa.Wipe()
			return nil, fmt.Errorf("%s: %w", h.Type, err)
		}
		a.set(typ, v)
	}
	m := &Message{Type: h.Type, Seq: h.Seq}
	switch {
	case h.Type == TypeHello:
		m.Hello = a.hello
	case h.Type == TypeReplayDone:
		m.Replay = a.replay
	case h.Type == TypeResult:
		m.Result = a.res
	case h.Type.IsEvent():
		m.Event = a.event(h.Type)
	case h.Type == TypeAddPolicy || h.Type == TypeQueryPolicy || h.Type == TypeDelPolicy:
		m.Policy = a.pol
	case h.Type == TypeUpdateSA:
		m.SA, m.Update = a.sa, a.upd
	default:
		// GET_SPI, ADD_SA, QUERY_SA, DEL_SA, flushes and unknown types.
		m.SA = a.sa
	}
	if h.Type != TypeAddSA {
		// Only ADD_SA carries keys; never keep stray key attributes.
		a.sa.Wipe()
		m.SA.EncKey, m.SA.IntKey = nil, nil
	}
	return m, nil
}

func (a *attrs) event(t Type) Event {
	ev := Event{Kind: EventKind(t - TypeExpire + 1)}
	switch t {
	case TypeExpire:
		ev.SA, ev.Hard = a.sa.SAID, a.hard
	case TypeAcquire:
		ev.Reqid, ev.Src, ev.Dst = a.sa.Reqid, a.sa.Src, a.sa.Dst
	case TypeMapping:
		ev.SA, ev.Src, ev.NewPort = a.sa.SAID, a.upd.NewSrc, a.upd.NewSrcPort
	}
	return ev
}

// encoder appends attributes to a frame.
type encoder struct {
	b   []byte
	err error
}

func (e *encoder) attr(typ uint16, v []byte) {
	if len(v) > math.MaxUint16 {
		if e.err == nil {
			e.err = fmt.Errorf("attribute %d: %d bytes do not fit", typ, len(v))
		}
		return
	}
	e.b = binary.BigEndian.AppendUint16(e.b, typ)
	e.b = binary.BigEndian.AppendUint16(e.b, uint16(len(v)))
	e.b = append(e.b, v...)
}

func (e *encoder) u8(typ uint16, v uint8) { e.attr(typ, []byte{v}) }
func (e *encoder) bool(typ uint16, v bool) {
	if v {
		e.u8(typ, 1)
	} else {
		e.u8(typ, 0)
	}
}
func (e *encoder) u16(typ uint16, v uint16) { e.attr(typ, binary.BigEndian.AppendUint16(nil, v)) }
func (e *encoder) u32(typ uint16, v uint32) { e.attr(typ, binary.BigEndian.AppendUint32(nil, v)) }
func (e *encoder) u64(typ uint16, v uint64) { e.attr(typ, binary.BigEndian.AppendUint64(nil, v)) }

func (e *encoder) addr(typ uint16, a netip.Addr) {
	switch {
	case a.Is4():
		b := a.As4()
		e.attr(typ, b[:])
	case a.Is6():
		b := a.As16()
		e.attr(typ, b[:])
	}
}

func (e *encoder) prefix(typ uint16, p netip.Prefix) {
	if !p.IsValid() {
		return
	}
	a := p.Addr()
	v := []byte{byte(p.Bits())}
	if a.Is4() {
		b := a.As4()
		v = append(v, b[:]...)
	} else {
		b := a.As16()
		v = append(v, b[:]...)
	}
	e.attr(typ, v)
}

func (e *encoder) portRange(typ uint16, lo, hi uint16) {
	v := binary.BigEndian.AppendUint16(nil, lo)
	e.attr(typ, binary.BigEndian.AppendUint16(v, hi))
}

func (e *encoder) saID(sa *model.SA) {
	e.addr(attrSrc, sa.Src)
	e.addr(attrDst, sa.Dst)
	e.u32(attrSPI, sa.SPI)
	e.u8(attrProto, sa.Proto)
	e.u32(attrMark, sa.Mark)
	e.u32(attrMarkMask, sa.MarkMask)
	e.u32(attrIfID, sa.IfID)
}

func (e *encoder) fullSA(sa *model.SA) {
	e.saID(sa)
	e.u8(attrMode, uint8(sa.Mode))
	e.u32(attrReqid, sa.Reqid)
	e.bool(attrInbound, sa.Inbound)
	e.bool(attrEncap, sa.Encap)
	e.u16(attrSrcPort, sa.SrcPort)
	e.u16(attrDstPort, sa.DstPort)
	e.u16(attrEncAlg, sa.EncAlg)
	if sa.EncKey != nil {
		e.attr(attrEncKey, sa.EncKey)
	}
	e.u16(attrIntAlg, sa.IntAlg)
	if sa.IntKey != nil {
		e.attr(attrIntKey, sa.IntKey)
	}
	e.u8(attrICVLen, sa.ICVLen)
	e.u32(attrReplayWindow, sa.ReplayWindow)
	e.bool(attrESN, sa.ESN)
	e.u64(attrSoftBytes, sa.Soft.Bytes)
	e.u64(attrSoftPackets, sa.Soft.Packets)
	e.u64(attrSoftTime, uint64(sa.Soft.Time/time.Second))
	e.u64(attrHardBytes, sa.Hard.Bytes)
	e.u64(attrHardPackets, sa.Hard.Packets)
	e.u64(attrHardTime, uint64(sa.Hard.Time/time.Second))
}

func (e *encoder) policy(p *model.Policy) {
	e.prefix(attrSelSrc, p.Sel.Src)
	e.prefix(attrSelDst, p.Sel.Dst)
	e.u8(attrSelProto, p.Sel.Proto)
	e.portRange(attrSelSport, p.Sel.SrcPortLo, p.Sel.SrcPortHi)
	e.portRange(attrSelDport, p.Sel.DstPortLo, p.Sel.DstPortHi)
	e.u8(attrDir, uint8(p.Dir))
	e.u32(attrMark, p.Mark)
	e.u32(attrMarkMask, p.MarkMask)
	e.u32(attrIfID, p.IfID)
	e.u8(attrAction, uint8(p.Action))
	e.u32(attrPriority, p.Priority)
	e.u32(attrReqid, p.Reqid)
	e.u8(attrMode, uint8(p.Mode))
	e.addr(attrTmplSrc, p.TmplSrc)
	e.addr(attrTmplDst, p.TmplDst)
	e.u32(attrSPI, p.SPI)
}

// AppendMessage appends m as one frame to dst. Callers that encode keys
// should wipe the returned buffer when done with it.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	start := len(dst)
	dst = append(dst, Version, byte(m.Type), 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, m.Seq)
	dst = append(dst, 0, 0, 0, 0) // length, filled in below
	e := encoder{b: dst}
	switch t := m.Type; {
	case t == TypeHello:
		e.attr(attrName, []byte(m.Hello.Name))
		e.u32(attrPID, m.Hello.PID)
	case t == TypeReplayDone:
		e.u32(attrReplayed, m.Replay.Replayed)
		e.u32(attrReplayFailed, m.Replay.Failed)
	case t == TypeGetSPI:
		e.addr(attrSrc, m.SA.Src)
		e.addr(attrDst, m.SA.Dst)
		e.u8(attrProto, m.SA.Proto)
	case t == TypeAddSA:
		e.fullSA(&m.SA)
	case t == TypeUpdateSA:
		e.saID(&m.SA)
		e.addr(attrNewSrc, m.Update.NewSrc)
		e.addr(attrNewDst, m.Update.NewDst)
		e.u16(attrNewSrcPort, m.Update.NewSrcPort)
		e.u16(attrNewDstPort, m.Update.NewDstPort)
		e.bool(attrNewEncap, m.Update.Encap)
	case t == TypeQuerySA || t == TypeDelSA:
		e.saID(&m.SA)
	case t == TypeAddPolicy || t == TypeQueryPolicy || t == TypeDelPolicy:
		e.policy(&m.Policy)
	case t == TypeResult:
		r := &m.Result
		e.u32(attrStatus, uint32(r.Status))
		if r.Message != "" {
			e.attr(attrMessage, []byte(r.Message))
		}
		if r.SPI != 0 {
			e.u32(attrSPI, r.SPI)
		}
		if r.Stats.Bytes != 0 || r.Stats.Packets != 0 {
			e.u64(attrBytes, r.Stats.Bytes)
			e.u64(attrPackets, r.Stats.Packets)
		}
		if !r.Stats.LastUse.IsZero() && r.Stats.LastUse.Unix() > 0 {
			e.u64(attrUseTime, uint64(r.Stats.LastUse.Unix()))
		}
	case t == TypeExpire:
		ev := &m.Event
		e.addr(attrDst, ev.SA.Dst)
		e.u32(attrSPI, ev.SA.SPI)
		e.u8(attrProto, ev.SA.Proto)
		e.u32(attrMark, ev.SA.Mark)
		e.bool(attrHard, ev.Hard)
	case t == TypeAcquire:
		ev := &m.Event
		e.u32(attrReqid, ev.Reqid)
		e.addr(attrSrc, ev.Src)
		e.addr(attrDst, ev.Dst)
	case t == TypeMapping:
		ev := &m.Event
		e.addr(attrDst, ev.SA.Dst)
		e.u32(attrSPI, ev.SA.SPI)
		e.u8(attrProto, ev.SA.Proto)
		e.u32(attrMark, ev.SA.Mark)
		e.addr(attrNewSrc, ev.Src)
		e.u16(attrNewSrcPort, ev.NewPort)
	case t == TypeFlushSAs || t == TypeFlushPolicies:
	default:
		return dst[:start], fmt.Errorf("encode %s: unknown message type", t)
	}
	if e.err != nil {
		clear(e.b[start:])
		return dst[:start], fmt.Errorf("encode %s: %w", m.Type, e.err)
	}
	n := len(e.b) - start - HeaderLen
	if n > MaxPayload {
		clear(e.b[start:])
		return dst[:start], fmt.Errorf("encode %s: payload of %d bytes exceeds %d", m.Type, n, MaxPayload)
	}
	binary.BigEndian.PutUint32(e.b[start+8:], uint32(n))
	return e.b, nil
}

// EventMessage builds the frame for an event.
func EventMessage(ev Event) (*Message, error) {
	var t Type
	switch ev.Kind {
	case EventExpire:
		t = TypeExpire
	case EventAcquire:
		t = TypeAcquire
	case EventMapping:
		t = TypeMapping
	default:
		return nil, fmt.Errorf("event kind %d: %w", ev.Kind, model.ErrInvalid)
	}
	return &Message{Type: t, Event: ev}, nil
}
