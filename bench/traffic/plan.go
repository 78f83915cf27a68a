// Package traffic describes what the benchmark offers to a gateway: the SAs
// (suite, keys, addresses, selectors), the packet size mixes, and the
// frames themselves, written as pcap files for DPDK's net_pcap to replay.
// The same plan feeds swanpathd (over the plugin socket) and DPDK's
// ipsec-secgw (as its configuration file), so both carry identical SAs.
//
// Inbound traffic is real ESP, made here with Go's standard crypto from the
// keys the gateway gets: its decryption has to succeed for a packet to
// count.
package traffic

import (
	"crypto/rand"
	"fmt"
	"net/netip"

	"github.com/swanpath/swanpath/bridge/model"
)

// Suite is an ESP transform as the benchmark uses it.
type Suite struct {
	Name      string // short name for tables and file names
	Title     string // for people
	EncAlg    uint16 // IKEv2 transform IDs, as the plugin socket carries them
	IntAlg    uint16
	EncKeyLen int // key material, salt included (GCM: 16 + 4)
	SaltLen   int
	IntKeyLen int
	IVLen     int // on the wire
	ICVLen    int
	Align     int // the ESP payload and trailer are padded to this
}

// AEAD reports whether the suite is an AEAD (no separate integrity).
func (s Suite) AEAD() bool { return s.IntAlg == model.IntegNone }

// The two suites of the benchmark.
var (
	GCM128 = Suite{Name: "gcm128", Title: "AES-GCM-128", EncAlg: model.EncrAESGCM16,
		IntAlg: model.IntegNone, EncKeyLen: 20, SaltLen: 4, IVLen: 8, ICVLen: 16, Align: 4}
	CBC128SHA256 = Suite{Name: "cbc128-sha256", Title: "AES-CBC-128+HMAC-SHA256", EncAlg: model.EncrAESCBC,
		IntAlg: model.IntegHMACSHA256_128, EncKeyLen: 16, IntKeyLen: 32, IVLen: 16, ICVLen: 16, Align: 16}
)

// Suites lists them in table order.
var Suites = []Suite{GCM128, CBC128SHA256}

// SuiteByName finds a suite by its Name.
func SuiteByName(name string) (Suite, bool) {
	for _, s := range Suites {
		if s.Name == name {
			return s, true
		}
	}
	return Suite{}, false
}

// Addresses of the benchmark topology (documentation ranges and 10/8,
// inside a namespace of the benchmark's own).
var (
	// the gateway's outer address and its peer's
	GatewayWAN = netip.MustParseAddr("192.0.2.1")
	PeerWAN    = netip.MustParseAddr("192.0.2.2")
	// the gateway's protected side: its TAP address and the next hop
	// towards the hosts of LocalNet
	GatewayLAN = netip.MustParseAddr("10.0.0.1")
	LANNextHop = netip.MustParseAddr("10.0.0.2")
	LocalNet   = netip.MustParsePrefix("10.1.0.0/16")
	LocalHost  = netip.MustParseAddr("10.1.0.10")
	// RemoteNets are carved from here: SA i protects 10.(128+i/256).(i%256).0/24
	RemoteSpace = netip.MustParsePrefix("10.128.0.0/9")
	// MACs of the next hops (permanent neighbour entries)
	LANNextHopMAC = [6]byte{0x02, 0x00, 0x00, 0x00, 0x01, 0x02}
	PeerMAC       = [6]byte{0x02, 0x00, 0x00, 0x00, 0x02, 0x02}
)

// NATTPort is the UDP port of ESP-in-UDP on both ends.
const NATTPort = 4500

// MaxSAs is how many remote /24s RemoteSpace holds.
const MaxSAs = 1 << 15

// SA is one tunnel: an outbound and an inbound SA share index, reqid,
// selectors and keys (each direction has its own SPI).
type SA struct {
	Index     int
	Reqid     uint32
	SPIOut    uint32
	SPIIn     uint32
	EncKey    []byte // salt included
	IntKey    []byte
	RemoteNet netip.Prefix
}

// RemoteHost is the host behind the peer that SA i's packets go to/come from.
func (s *SA) RemoteHost() netip.Addr {
	b := s.RemoteNet.Addr().As4()
	b[3] = 10
	return netip.AddrFrom4(b)
}

// Plan is a set of SAs with one suite, plain ESP or ESP-in-UDP.
type Plan struct {
	Suite Suite
	Encap bool
	SAs   []SA
}

// NewPlan makes n SAs with fresh random keys.
func NewPlan(s Suite, n int, encap bool) (*Plan, error) {
	if n < 1 || n > MaxSAs {
		return nil, fmt.Errorf("plan: %d SAs (1..%d)", n, MaxSAs)
	}
	p := &Plan{Suite: s, Encap: encap, SAs: make([]SA, n)}
	base := RemoteSpace.Addr().As4()
	for i := range p.SAs {
		a := base
		a[1] += byte(i >> 8)
		a[2] = byte(i)
		sa := SA{Index: i, Reqid: uint32(i + 1), SPIOut: 0x10000000 + uint32(i), SPIIn: 0x20000000 + uint32(i),
			EncKey: make([]byte, s.EncKeyLen), IntKey: make([]byte, s.IntKeyLen),
			RemoteNet: netip.PrefixFrom(netip.AddrFrom4(a), 24)}
		if _, err := rand.Read(sa.EncKey); err != nil {
			return nil, err
		}
		if _, err := rand.Read(sa.IntKey); err != nil {
			return nil, err
		}
		p.SAs[i] = sa
	}
	return p, nil
}

// ModelSA is SA i in one direction as charon would install it over the
// plugin socket: tunnel mode, replay window 0 (the same packets are
// replayed forever), keys copied (the plugin client wipes what it sends).
func (p *Plan) ModelSA(i int, inbound bool) *model.SA {
	s := &p.SAs[i]
	sa := &model.SA{
		SAID:   model.SAID{Dst: PeerWAN, SPI: s.SPIOut, Proto: model.ProtoESP},
		Src:    GatewayWAN,
		Reqid:  s.Reqid,
		Mode:   model.ModeTunnel,
		EncAlg: p.Suite.EncAlg, EncKey: append(model.Key(nil), s.EncKey...),
		IntAlg: p.Suite.IntAlg,
		ICVLen: uint8(p.Suite.ICVLen),
	}
	if p.Suite.IntKeyLen > 0 {
		sa.IntKey = append(model.Key(nil), s.IntKey...)
	}
	if inbound {
		sa.SAID.Dst, sa.SAID.SPI, sa.Src, sa.Inbound = GatewayWAN, s.SPIIn, PeerWAN, true
	}
	if p.Encap {
		sa.Encap, sa.SrcPort, sa.DstPort = true, NATTPort, NATTPort
	}
	return sa
}

// ModelPolicy is the policy of SA i for one direction: out for outbound,
// fwd (forwarded traffic arriving through the tunnel) for inbound.
func (p *Plan) ModelPolicy(i int, inbound bool) *model.Policy {
	s := &p.SAs[i]
	pol := &model.Policy{
		PolicyID: model.PolicyID{
			Sel: model.Selector{Src: LocalNet, Dst: s.RemoteNet, SrcPortHi: 0xffff, DstPortHi: 0xffff},
			Dir: model.DirOut,
		},
		Action: model.ActionIPsec, Priority: 1000, Reqid: s.Reqid, Mode: model.ModeTunnel,
		TmplSrc: GatewayWAN, TmplDst: PeerWAN,
	}
	if inbound {
		pol.Sel.Src, pol.Sel.Dst = s.RemoteNet, LocalNet
		pol.Dir = model.DirFwd
		pol.TmplSrc, pol.TmplDst = PeerWAN, GatewayWAN
	}
	return pol
}

// DropPolicy is an outbound drop policy for all of RemoteSpace, below
// every SA's policy in priority: traffic to a remote net whose SA is not
// installed yet is dropped by the fast path instead of going to the kernel.
func DropPolicy() *model.Policy {
	return &model.Policy{
		PolicyID: model.PolicyID{
			Sel: model.Selector{Src: LocalNet, Dst: RemoteSpace, SrcPortHi: 0xffff, DstPortHi: 0xffff},
			Dir: model.DirOut,
		},
		Action: model.ActionDrop, Priority: 2000,
	}
}
