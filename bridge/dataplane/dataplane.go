// Package dataplane is the boundary between the control plane (bridge) and
// the DPDK fast path: the interface the fast path implements and the plain
// Go types that cross it. It has no cgo, so the bridge and its tests never
// link DPDK (see bridge/nocgo_test.go).
package dataplane

import (
	"net"
	"net/netip"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// Dataplane is the fast path as the control plane sees it. Every table
// change is published to the packet loop without locking it.
type Dataplane interface {
	// AddSA creates the SA in the fast path. The key bytes are wiped from
	// sa once they have been handed over.
	AddSA(sa *model.SA) error
	DelSA(id model.SAID) error
	// MoveSA gives an SA new addresses and ports (MOBIKE, NAT remapping);
	// it keeps its keys, counters and sequence numbers. The SA's ID
	// changes when its destination does.
	MoveSA(id model.SAID, src, dst netip.Addr, sport, dport uint16, encap bool) error
	// ExpireSA stops all traffic on an SA (hard lifetime over) until it
	// is deleted.
	ExpireSA(id model.SAID) error
	// BlockSA stops an outbound SA's traffic (dropped and counted as
	// drop_seq) because no sequence number is known safe for it: it
	// stays installed and bound, so that charon's rekey replaces it
	// make-before-break. Refused for an inbound SA.
	BlockSA(id model.SAID) error
	// SetPolicy adds or replaces one policy (and the SA that protects its
	// traffic). Policy changes that come in a burst may take effect
	// together a few milliseconds later: the policy tables are rebuilt
	// aside and swapped, at most once per short interval.
	SetPolicy(b Binding) error
	DelPolicy(id model.PolicyID) error
	// Bind changes the SA that protects an outbound policy's traffic
	// (rekey), at once and in place.
	Bind(id model.PolicyID, sa model.SAID, has bool) error
	// SetFIB replaces the forwarding tables (routes, neighbours).
	SetFIB(f FIB) error
	SAStats(id model.SAID) (SACounters, bool)
	Ports() []PortInfo
	// PortStats has one entry per port, in the order of Ports, then one
	// per route-based interface (named as the interface).
	PortStats() []PortStats
	// SetClosed makes the fast path fail closed (true: only ARP,
	// neighbour discovery and the gateway's own IKE pass; everything else
	// is dropped and counted as drop_closed) or forward by its policies
	// (false). It starts closed.
	SetClosed(closed bool)
	// Notes returns what the packet loop noted since the last call: next
	// hops without neighbour (the kernel is asked to resolve them) and
	// packets for an IPsec policy without SA (charon gets an acquire).
	Notes() []Note
}

// Binding is a policy with the SA that protects its traffic (outbound), if
// one is installed.
type Binding struct {
	Policy *model.Policy
	SA     model.SAID
	HasSA  bool
}

// Route is one FIB entry. Port is the fast path port index.
type Route struct {
	Dst       netip.Prefix
	Port      int
	Gateway   netip.Addr // invalid = on link
	Local     bool       // addressed to the gateway: hand to the kernel
	Blackhole bool
}

// Neigh is a resolved next hop on a port.
type Neigh struct {
	Port int
	IP   netip.Addr
	MAC  net.HardwareAddr
}

// FIB is the complete forwarding state.
type FIB struct {
	Routes []Route
	Neighs []Neigh
	// Addrs are the gateway's own addresses, exactly those configured on
	// its interfaces. Only to these does the fast path take ESP-in-UDP
	// for itself and let IKE pass beside the policies; a Local route for
	// a whole prefix does not widen that.
	Addrs []netip.Addr
}

// PortInfo describes one fast path port and its exception interface.
type PortInfo struct {
	Index  int
	Name   string
	Device string
	Tap    string
	MAC    net.HardwareAddr
}

// PortStats are the counters of one port, by name (see CounterNames).
type PortStats struct {
	Name     string
	Counters map[string]uint64
}

// SACounters are an SA's traffic and drop counters.
type SACounters struct {
	Bytes, Packets uint64
	LastUse        time.Time
	DropAuth       uint64
	DropReplay     uint64
	DropMalformed  uint64
	DropPolicy     uint64
	Crypto         string // crypto device that runs it
	CryptoMode     string // "cpu" (synchronous on the worker) or "lookaside" (queue pair)
	// Interface is the route-based interface whose traffic the SA
	// carries when the SA has no mark or interface id of its own but its
	// policies do (libreswan's vti-interface=): inbound, where its
	// plaintext leaves; outbound, the interface of the policies bound to
	// it. "" otherwise.
	Interface string
	// PathMTU is, for an outbound SA, the path MTU learned from ICMP
	// about its ESP (0: none learned, or expired)
	PathMTU uint16
	// SeqUsed is, for an outbound SA, the first sequence number it has
	// not used (above every number sent): where it resumes after a restart.
	SeqUsed uint64
	// SeqSeen is, for an inbound SA, the highest sequence number received
	// with a good ICV (or the one it was created with): after a restart
	// its replay window starts above it.
	SeqSeen uint64
	// Blocked says an outbound SA was stopped by BlockSA.
	Blocked bool
}

// NoteKind says what a Note reports.
type NoteKind uint8

const (
	NoteNoNeighbour NoteKind = 1 // Port, Dst: next hop to resolve
	NoteAcquire     NoteKind = 2 // Reqid, Src, Dst: the packet's addresses
	NoteMapping     NoteKind = 3 // SPI, Src, SrcPort: ESP-in-UDP from a new place
)

// Note is one thing the packet loop reports to the control plane.
type Note struct {
	Kind     NoteKind
	Port     int
	Reqid    uint32
	SPI      uint32
	Src, Dst netip.Addr
	SrcPort  uint16
}

// CounterNames lists the per-port counters in display order.
var CounterNames = []string{
	"rx", "tx", "tap_rx", "tap_tx", "esp_in", "esp_out",
	"drop_unknown_spi", "spi_held", "drop_auth", "drop_replay", "drop_malformed",
	"drop_policy", "drop_no_neigh", "drop_no_route", "drop_no_sa",
	"drop_crypto", "drop_tx", "drop_nomem", "drop_mtu", "icmp_mtu", "drop_expired",
	"drop_closed", "frag_in", "frag_out", "drop_frag", "drop_spoof", "icmp_limited", "drop_seq",
	"pmtu_learned", "pmtu_ignored",
	// why fragments were dropped (each also in drop_frag); last, as in dp.h
	"frag_bad", "frag_oversize", "frag_overlap", "frag_too_many", "frag_timeout", "frag_evicted",
	"frag_table_full",
}
