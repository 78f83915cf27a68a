package xfrm

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/model"
)

// XFRM constants of include/uapi/linux/xfrm.h that nl does not name.
const (
	xfrmModeTransport = 0
	xfrmModeTunnel    = 1

	xfrmPolicyAllow = 0
	xfrmPolicyBlock = 1

	xfrmDirIn  = 0
	xfrmDirOut = 1
	xfrmDirFwd = 2

	udpEncapESPinUDP = 2 // UDP_ENCAP_ESPINUDP (RFC 3948)

	xfrmInf = ^uint64(0)
)

// errLarval marks a state without algorithms: an SPI the IKE daemon
// allocated (XFRM_MSG_ALLOCSPI) for an SA still being negotiated. It is
// no SA yet and is skipped without complaint.
var errLarval = errors.New("larval state (allocated SPI, no keys yet)")

// toSA translates an XFRM state into a model SA. local says whether an
// address is the gateway's own (an SA to it is inbound), for kernels that
// do not say the direction (XFRMA_SA_DIR, Linux 6.10). The keys are copied
// into the SA; s's key bytes (the message's) are wiped in every case.
//
// Time lifetimes are left out: the kernel keeps its own timers on its copy
// of the SA and tells the IKE daemon itself. Byte and packet lifetimes are
// kept: only the fast path's counters can reach them (see Mirror.Notify).
func toSA(s *kstate, local func(netip.Addr) bool) (*model.SA, error) {
	defer s.wipe()
	k := s.said()
	sa := &model.SA{
		SAID:     model.SAID{Dst: k.dst, SPI: k.spi, Proto: k.proto, Mark: s.mark},
		Src:      addr(s.info.Saddr, s.info.Family),
		MarkMask: s.markMask,
		IfID:     s.ifID,
		Reqid:    s.info.Reqid,
	}
	var errs []error
	switch s.info.Mode {
	case xfrmModeTransport:
		sa.Mode = model.ModeTransport
	case xfrmModeTunnel:
		sa.Mode = model.ModeTunnel
	default:
		errs = append(errs, fmt.Errorf("XFRM mode %d (only transport and tunnel): %w", s.info.Mode, model.ErrUnsupported))
	}
	switch s.dir {
	case saDirIn:
		sa.Inbound = true
	case saDirOut:
	default:
		sa.Inbound = local != nil && local(sa.Dst)
	}
	if s.encap != nil {
		if s.encap.EncapType != udpEncapESPinUDP {
			errs = append(errs, fmt.Errorf("UDP encapsulation type %d (only ESP-in-UDP, 2): %w", s.encap.EncapType, model.ErrUnsupported))
		}
		sa.Encap = true
		sa.SrcPort, sa.DstPort = ntohs(s.encap.EncapSport), ntohs(s.encap.EncapDport)
	}
	if s.aead == nil && s.crypt == nil && s.auth == nil {
		if sa.Proto == model.ProtoESP {
			return nil, fmt.Errorf("SA %s: %w", sa.SAID, errLarval)
		}
	}
	switch {
	case s.aead != nil:
		if s.crypt != nil || s.auth != nil {
			errs = append(errs, fmt.Errorf("AEAD together with a cipher or integrity algorithm: %w", model.ErrInvalid))
		}
		id, err := aeadAlg(s.aead.name, s.aead.bits)
		if err != nil {
			errs = append(errs, err)
		}
		sa.EncAlg, sa.ICVLen = id, uint8(s.aead.bits/8)
		sa.EncKey = model.Key(append([]byte(nil), s.aead.key...))
	case s.crypt != nil:
		id, err := cryptAlg(s.crypt.name)
		if err != nil {
			errs = append(errs, err)
		}
		sa.EncAlg = id
		sa.EncKey = model.Key(append([]byte(nil), s.crypt.key...))
		if s.auth == nil {
			errs = append(errs, fmt.Errorf("cipher %q without integrity: %w", s.crypt.name, model.ErrUnsupported))
		}
	}
	if s.auth != nil {
		id, err := authAlg(s.auth.name, s.auth.bits)
		if err != nil {
			errs = append(errs, err)
		}
		sa.IntAlg, sa.ICVLen = id, uint8(s.auth.bits/8)
		sa.IntKey = model.Key(append([]byte(nil), s.auth.key...))
		if s.crypt == nil && s.aead == nil {
			errs = append(errs, fmt.Errorf("integrity %q without a cipher (AH-like ESP): %w", s.auth.name, model.ErrUnsupported))
		}
	}
	sa.ESN = s.info.Flags&nl.XFRM_STATE_ESN != 0
	sa.ReplayWindow = uint32(s.info.ReplayWindow)
	if s.esn != nil {
		sa.ReplayWindow = s.esn.window
	}
	// where the kernel's copy stands (the counters swanpathd writes back,
	// or what the kernel itself processed): a lower bound the engine
	// raises from its own state file
	switch {
	case s.esn != nil && sa.Inbound:
		sa.SeqStart = uint64(s.esn.seqHi)<<32 | uint64(s.esn.seq)
	case s.esn != nil:
		if o := uint64(s.esn.oseqHi)<<32 | uint64(s.esn.oseq); o != 0 {
			sa.SeqStart = o + 1
		}
	case s.replay != nil && sa.Inbound:
		sa.SeqStart = uint64(s.replay.Seq)
	case s.replay != nil && s.replay.OSeq != 0:
		sa.SeqStart = uint64(s.replay.OSeq) + 1
	}
	sa.Soft = model.Lifetime{Bytes: limit(s.info.Lft.SoftByteLimit), Packets: limit(s.info.Lft.SoftPacketLimit)}
	sa.Hard = model.Lifetime{Bytes: limit(s.info.Lft.HardByteLimit), Packets: limit(s.info.Lft.HardPacketLimit)}
	for _, t := range s.other {
		errs = append(errs, fmt.Errorf("XFRM attribute %d: %w", t, model.ErrUnsupported))
	}
	// a mark or XFRM interface id makes the SA route-based (a VTI's, an
	// XFRM interface's); the fast path takes it when an [[interface]]
	// has that mark or id and refuses it otherwise
	if err := sa.ValidateRouted(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		sa.Wipe()
		return nil, fmt.Errorf("SA %s: %w", sa.SAID, errors.Join(errs...))
	}
	return sa, nil
}

// limit turns XFRM's "infinite" (and 0, which the kernel treats alike for
// byte and packet limits) into the model's 0.
func limit(v uint64) uint64 {
	if v == xfrmInf {
		return 0
	}
	return v
}

// errNotMirrored marks a policy that is not the IKE daemon's business with
// the fast path: per-socket policies (the daemons' own IKE sockets), Mobile
// IPv6 sub-policies, and swanpathd's own bypass policies (bypass.go).
var errNotMirrored = errors.New("not mirrored")

// toPolicy translates an XFRM policy into a model policy.
func toPolicy(p *kpolicy) (*model.Policy, error) {
	if p.info.Dir > xfrmDirFwd {
		return nil, fmt.Errorf("socket policy (dir %d): %w", p.info.Dir, errNotMirrored)
	}
	if p.subType {
		return nil, fmt.Errorf("sub policy: %w", errNotMirrored)
	}
	if isBypass(p) {
		return nil, fmt.Errorf("swanpathd's bypass policy: %w", errNotMirrored)
	}
	sel, err := toSelector(&p.info.Sel)
	mp := &model.Policy{
		PolicyID: model.PolicyID{Sel: sel, Dir: model.Dir(p.info.Dir), Mark: p.mark, MarkMask: p.markMask, IfID: p.ifID},
		Priority: p.info.Priority,
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	switch {
	case p.info.Action == xfrmPolicyBlock:
		mp.Action = model.ActionDrop
	case p.info.Action != xfrmPolicyAllow:
		errs = append(errs, fmt.Errorf("action %d: %w", p.info.Action, model.ErrInvalid))
	case len(p.tmpls) == 0:
		mp.Action = model.ActionPass
	default:
		mp.Action = model.ActionIPsec
		var esp *nl.XfrmUserTmpl
		for i := range p.tmpls {
			t := &p.tmpls[i]
			switch {
			case t.XfrmId.Proto == model.ProtoESP && esp == nil:
				esp = t
			case t.Optional != 0:
				// an optional IPComp template: the fast path sends
				// uncompressed, which the peer accepts
			default:
				errs = append(errs, fmt.Errorf("template protocol %d (only one ESP template, other templates optional): %w", t.XfrmId.Proto, model.ErrUnsupported))
			}
		}
		if esp == nil {
			errs = append(errs, fmt.Errorf("no ESP template: %w", model.ErrUnsupported))
			break
		}
		mp.Reqid = esp.Reqid
		switch esp.Mode {
		case xfrmModeTransport:
			mp.Mode = model.ModeTransport
		case xfrmModeTunnel:
			mp.Mode = model.ModeTunnel
			mp.TmplSrc, mp.TmplDst = addr(esp.Saddr, esp.Family), addr(esp.XfrmId.Daddr, esp.Family)
		default:
			errs = append(errs, fmt.Errorf("template mode %d: %w", esp.Mode, model.ErrUnsupported))
		}
		mp.SPI = ntohl(esp.XfrmId.Spi)
	}
	if err := mp.ValidateRouted(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy %s %s: %w", mp.Sel, mp.Dir, errors.Join(errs...))
	}
	return mp, nil
}

// toSelector translates a selector. XFRM matches a port under a mask; the
// model has ranges, so a mask other than none or all is refused.
func toSelector(s *nl.XfrmSelector) (model.Selector, error) {
	src, dst := addr(s.Saddr, s.Family), addr(s.Daddr, s.Family)
	var errs []error
	if !src.IsValid() {
		errs = append(errs, fmt.Errorf("selector family %d: %w", s.Family, model.ErrUnsupported))
	}
	sel := model.Selector{Proto: s.Proto}
	var err1, err2 error
	if src.IsValid() {
		sel.Src, err1 = src.Prefix(int(s.PrefixlenS))
		sel.Dst, err2 = dst.Prefix(int(s.PrefixlenD))
	}
	for _, err := range []error{err1, err2} {
		if err != nil {
			errs = append(errs, fmt.Errorf("selector prefix: %v: %w", err, model.ErrInvalid))
		}
	}
	var err error
	if sel.SrcPortLo, sel.SrcPortHi, err = portRange(s.Sport, s.SportMask); err != nil {
		errs = append(errs, fmt.Errorf("source %w", err))
	}
	if sel.DstPortLo, sel.DstPortHi, err = portRange(s.Dport, s.DportMask); err != nil {
		errs = append(errs, fmt.Errorf("destination %w", err))
	}
	if s.Ifindex != 0 {
		errs = append(errs, fmt.Errorf("selector on interface %d: %w", s.Ifindex, model.ErrUnsupported))
	}
	return sel, errors.Join(errs...)
}

func portRange(port, mask uint16) (lo, hi uint16, err error) {
	port, mask = ntohs(port), ntohs(mask)
	switch mask {
	case 0:
		return 0, 0xffff, nil
	case 0xffff:
		return port, port, nil
	}
	return 0, 0, fmt.Errorf("port %d under mask 0x%04x: %w", port, mask, model.ErrUnsupported)
}
