// Package model holds swanpath's description of IPsec state: SAs, policies
// and their selectors, as the IKE daemon hands them over. It is the common
// language of every bridge source (charon plugin socket, netlink XFRM) and of
// the fast path's control side. It has no behaviour beyond validation and
// printing, and never prints key material.
package model

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Protocol numbers as in the IP header.
const (
	ProtoESP = 50
	ProtoAH  = 51
)

// Mode is the IPsec mode of an SA.
type Mode uint8

const (
	ModeTransport Mode = 0
	ModeTunnel    Mode = 1
)

func (m Mode) String() string {
	switch m {
	case ModeTransport:
		return "transport"
	case ModeTunnel:
		return "tunnel"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Dir is the direction of a policy, as in XFRM.
type Dir uint8

const (
	DirIn  Dir = 0
	DirOut Dir = 1
	DirFwd Dir = 2
)

func (d Dir) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	case DirFwd:
		return "fwd"
	}
	return fmt.Sprintf("dir(%d)", uint8(d))
}

// PolicyAction says what a matching packet gets.
type PolicyAction uint8

const (
	ActionIPsec PolicyAction = 0 // protect with the SA of the policy's reqid
	ActionPass  PolicyAction = 1 // bypass IPsec
	ActionDrop  PolicyAction = 2 // discard
)

func (a PolicyAction) String() string {
	switch a {
	case ActionIPsec:
		return "ipsec"
	case ActionPass:
		return "pass"
	case ActionDrop:
		return "drop"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Algorithm identifiers are IKEv2 transform IDs (RFC 7296 §3.3.2, IANA
// "Transform Type 1/3"), which is also what strongSwan's
// encryption_algorithm_t and integrity_algorithm_t use. What each means
// (names, key, salt and ICV lengths) is in suites.go.
const (
	EncrNull             uint16 = 11
	EncrAESCBC           uint16 = 12
	EncrAESCTR           uint16 = 13
	EncrAESGCM8          uint16 = 18
	EncrAESGCM12         uint16 = 19
	EncrAESGCM16         uint16 = 20
	EncrNullAESGMAC      uint16 = 21
	EncrChaCha20Poly1305 uint16 = 28

	IntegNone           uint16 = 0
	IntegHMACSHA1_96    uint16 = 2
	IntegHMACSHA256_128 uint16 = 12
	IntegHMACSHA384_192 uint16 = 13
	IntegHMACSHA512_256 uint16 = 14
)

// Key is secret key material. It prints as its length only.
type Key []byte

func (k Key) String() string   { return fmt.Sprintf("<%d bytes redacted>", len(k)) }
func (k Key) GoString() string { return k.String() }

// Format keeps %x, %v and friends from leaking the bytes.
func (k Key) Format(f fmt.State, verb rune) { fmt.Fprint(f, k.String()) }

// Wipe overwrites the key in place.
func (k Key) Wipe() {
	for i := range k {
		k[i] = 0
	}
}

// Lifetime is one set of limits (soft or hard). Zero means unlimited.
type Lifetime struct {
	Bytes   uint64
	Packets uint64
	Time    time.Duration // since the SA was added
}

// SAID identifies an SA the way the kernel does: destination, SPI, protocol.
// Mark is part of the key too (XFRM allows two SAs that differ only in mark).
type SAID struct {
	Dst   netip.Addr
	SPI   uint32
	Proto uint8
	Mark  uint32
}

func (id SAID) String() string {
	return fmt.Sprintf("spi=0x%08x dst=%s proto=%d", id.SPI, id.Dst, id.Proto)
}

// SA is one IPsec security association.
type SA struct {
	SAID
	Src      netip.Addr
	MarkMask uint32
	IfID     uint32
	Reqid    uint32
	Mode     Mode
	Inbound  bool

	// UDP encapsulation (RFC 3948) with the real ports of the SA.
	Encap   bool
	SrcPort uint16
	DstPort uint16

	EncAlg uint16 // IKEv2 transform ID
	EncKey Key    // for AEAD and CTR, includes the salt/nonce at the end
	IntAlg uint16
	IntKey Key
	ICVLen uint8 // bytes; derived from the algorithm when zero

	ReplayWindow uint32 // packets; 0 disables anti-replay
	ESN          bool
	// SeqStart is, outbound, the first sequence number (0 means 1);
	// inbound, the highest one received before (0: none), which the
	// replay window starts above. The IKE daemon never sets it: swanpathd
	// does when an SA comes back after a restart, so that no sequence
	// number (the AES-GCM IV) is used twice and no packet received before
	// is accepted again.
	SeqStart uint64

	Soft, Hard Lifetime

	// Names, when known (from VICI); purely informative.
	Conn, Child string
}

// Wipe zeroes the keys.
func (sa *SA) Wipe() {
	sa.EncKey.Wipe()
	sa.IntKey.Wipe()
}

// Direction returns "in" or "out".
func (sa *SA) Direction() string {
	if sa.Inbound {
		return "in"
	}
	return "out"
}

// Selector is a traffic selector: one prefix each side, an IP protocol
// (0 = any) and port ranges (0-65535 = any).
type Selector struct {
	Src, Dst             netip.Prefix
	Proto                uint8
	SrcPortLo, SrcPortHi uint16
	DstPortLo, DstPortHi uint16
}

func (s Selector) String() string {
	str := fmt.Sprintf("src %s dst %s", s.Src, s.Dst)
	if s.Proto != 0 {
		str += fmt.Sprintf(" proto %d", s.Proto)
	}
	if s.SrcPortLo != 0 || (s.SrcPortHi != 0 && s.SrcPortHi != 0xffff) {
		str += fmt.Sprintf(" sport %d-%d", s.SrcPortLo, s.SrcPortHi)
	}
	if s.DstPortLo != 0 || (s.DstPortHi != 0 && s.DstPortHi != 0xffff) {
		str += fmt.Sprintf(" dport %d-%d", s.DstPortLo, s.DstPortHi)
	}
	return str
}

// PolicyID identifies a policy: selector, direction, mark and if_id.
type PolicyID struct {
	Sel      Selector
	Dir      Dir
	Mark     uint32
	MarkMask uint32
	IfID     uint32
}

// Policy is one security policy.
type Policy struct {
	PolicyID
	Action   PolicyAction
	Priority uint32
	Reqid    uint32 // SA template: the SA with this reqid protects matches
	Mode     Mode
	// Tunnel endpoints of the template (tunnel mode).
	TmplSrc, TmplDst netip.Addr
	// SPI of the outbound SA when the IKE daemon names it (informative:
	// the engine binds the newest SA of the reqid, see outSALocked).
	SPI uint32
}

// SAStats are the counters of one SA, as query_sa reports them.
type SAStats struct {
	Bytes   uint64
	Packets uint64
	LastUse time.Time // zero when never used
}

// Errors the bridge sources branch on.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrUnsupported = errors.New("not supported")
	ErrInvalid     = errors.New("invalid")
)

// Validate reports everything wrong with the SA at once, for a consumer
// that carries policy-based SAs only: a mark or XFRM interface id is
// refused (see ValidateRouted).
func (sa *SA) Validate() error {
	err := sa.validate()
	if rerr := routeBased(sa.Mark, sa.MarkMask, sa.IfID); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// ValidateRouted is Validate for a consumer that carries route-based SAs
// too (the fast path with its interfaces): a mark or XFRM interface id
// is accepted when it can name a route-based interface (a mark with the
// full mask); whether one is configured for it is the consumer's to say.
func (sa *SA) ValidateRouted() error {
	return errors.Join(sa.validate(), markUsable(sa.Mark, sa.MarkMask))
}

func (sa *SA) validate() error {
	var errs []error
	if sa.Proto != ProtoESP {
		errs = append(errs, fmt.Errorf("protocol %d: only ESP (50) is supported: %w", sa.Proto, ErrUnsupported))
	}
	if !sa.Src.IsValid() || !sa.Dst.IsValid() {
		errs = append(errs, fmt.Errorf("missing source or destination address: %w", ErrInvalid))
	} else if sa.Src.Is4() != sa.Dst.Is4() {
		errs = append(errs, fmt.Errorf("source %s and destination %s differ in family: %w", sa.Src, sa.Dst, ErrInvalid))
	}
	if sa.SPI == 0 {
		errs = append(errs, fmt.Errorf("SPI 0 is reserved: %w", ErrInvalid))
	}
	if sa.Encap && (sa.SrcPort == 0 || sa.DstPort == 0) {
		errs = append(errs, fmt.Errorf("UDP encapsulation without ports: %w", ErrInvalid))
	}
	return errors.Join(errs...)
}

// Validate reports what a consumer of policy-based policies only cannot
// honour of the policy (see ValidateRouted).
func (p *Policy) Validate() error {
	return routeBased(p.Mark, p.MarkMask, p.IfID)
}

// ValidateRouted is Validate for a consumer that carries route-based
// policies too.
func (p *Policy) ValidateRouted() error {
	return markUsable(p.Mark, p.MarkMask)
}

// RouteBased says whether an SA or policy with this mark and XFRM
// interface id belongs to a route-based interface, as on Linux, where
// either ties it to an XFRM interface (if_id) or a VTI (mark).
func RouteBased(mark, mask, ifID uint32) bool { return mark != 0 || mask != 0 || ifID != 0 }

// markUsable refuses a mark that no route-based interface can stand for:
// one with a partial mask, or mark 0 with a mask. The fast path does not
// match packets by mark, and ignoring a mask would be worse than refusing
// (with several peers on equal selectors told apart by their marks, one
// peer's traffic would go to another).
func markUsable(mark, mask uint32) error {
	if mask == 0 && mark == 0 {
		return nil
	}
	if mask != 0xffffffff || mark == 0 {
		return fmt.Errorf("mark 0x%x/0x%x: only a whole mark (mask 0xffffffff, mark not 0) names a route-based interface: %w",
			mark, mask, ErrUnsupported)
	}
	return nil
}

// routeBased refuses a mark or an XFRM interface id: the fast path does
// not match packets by mark or interface, and ignoring them would be
// worse than refusing (with several peers on equal selectors told apart
// by their marks, one peer's traffic would go to another).
func routeBased(mark, mask, ifID uint32) error {
	var errs []error
	if mark != 0 || mask != 0 {
		errs = append(errs, fmt.Errorf("mark 0x%x/0x%x: marks (route-based tunnels) are not supported: %w", mark, mask, ErrUnsupported))
	}
	if ifID != 0 {
		errs = append(errs, fmt.Errorf("XFRM interface id %d: route-based tunnels are not supported: %w", ifID, ErrUnsupported))
	}
	return errors.Join(errs...)
}
