package kernel

import (
	"net"
	"net/netip"
	"slices"
)

// Route is one route of the kernel's main table. A route whose Reject flag is set is a
// blackhole, unreachable, prohibit or throw route: it still wins the longest prefix match
// (so a more specific blackhole shadows the default route) but means "no route".
type Route struct {
	Dst      netip.Prefix // masked; 0.0.0.0/0 or ::/0 for a default route
	IfIndex  int          // output interface; 0 for reject routes
	Gateway  netip.Addr   // invalid (zero) for on-link routes
	Priority int          // the metric; lower wins between equal prefixes
	Reject   bool
}

// Neigh is a usable neighbour entry (ARP for IPv4, ND for IPv6). Entries the kernel is
// still resolving (INCOMPLETE) or gave up on (FAILED) are not in the snapshot at all.
type Neigh struct {
	IfIndex int
	IP      netip.Addr
	MAC     net.HardwareAddr
	State   int // NUD_* from <linux/neighbour.h>, kept for display and ageing decisions
}

// Link is one kernel interface. Up is the administrative state (IFF_UP); LowerUp is the
// carrier (IFF_LOWER_UP), which a TAP only has while someone holds its file descriptor.
type Link struct {
	Index   int
	Name    string
	MAC     net.HardwareAddr
	Up      bool
	LowerUp bool
}

// Snapshot is an immutable view of the kernel's routing state at one moment. Nothing in
// it, including the slices, may be modified once it has been published: readers share it
// without locks.
type Snapshot struct {
	Routes []Route      // sorted: prefix address (IPv4 first), prefix length, priority
	Neighs []Neigh      // sorted: ifindex, IP
	Local  []netip.Addr // addresses configured on any interface, sorted
	Links  []Link       // sorted by index
	Gen    uint64       // increases by one with every published snapshot

	// best holds, per prefix, the route Lookup returns for it (lowest priority). Lookup
	// probes it once per prefix length, which is cheap enough for the control plane;
	// the fast path compiles Routes into its own LPM.
	best   map[netip.Prefix]Route
	neighs map[neighKey]int // index into Neighs
	local  map[netip.Addr]struct{}
}

type neighKey struct {
	ifindex int
	ip      netip.Addr
}

// Lookup returns the route the kernel would choose for dst among the mirrored main-table
// routes: longest prefix, then lowest priority. It reports false when no route covers dst
// or when the best match is a reject route. Policy routing and ECMP hashing are not
// modelled; multipath routes were reduced to their first hop when mirrored.
func (s *Snapshot) Lookup(dst netip.Addr) (Route, bool) {
	if s == nil || !dst.IsValid() {
		return Route{}, false
	}
	dst = dst.Unmap()
	for bits := dst.BitLen(); bits >= 0; bits-- {
		p, err := dst.Prefix(bits)
		if err != nil {
			return Route{}, false
		}
		if r, ok := s.best[p]; ok {
			if r.Reject {
				return r, false
			}
			return r, true
		}
	}
	return Route{}, false
}

// NeighFor returns the usable neighbour entry for ip on interface ifindex.
func (s *Snapshot) NeighFor(ifindex int, ip netip.Addr) (Neigh, bool) {
	if s == nil {
		return Neigh{}, false
	}
	i, ok := s.neighs[neighKey{ifindex, ip.Unmap()}]
	if !ok {
		return Neigh{}, false
	}
	return s.Neighs[i], true
}

// IsLocal reports whether ip is one of the gateway's own addresses.
func (s *Snapshot) IsLocal(ip netip.Addr) bool {
	if s == nil {
		return false
	}
	_, ok := s.local[ip.Unmap()]
	return ok
}

// LinkByIndex returns the interface with the given index.
func (s *Snapshot) LinkByIndex(index int) (Link, bool) {
	if s == nil {
		return Link{}, false
	}
	i, ok := slices.BinarySearchFunc(s.Links, index, func(l Link, idx int) int { return l.Index - idx })
	if !ok {
		return Link{}, false
	}
	return s.Links[i], true
}

// newSnapshot sorts the slices it is given, takes ownership of them and builds the
// lookup indexes.
func newSnapshot(routes []Route, neighs []Neigh, local []netip.Addr, links []Link, gen uint64) *Snapshot {
	// Stable: routes sharing prefix and priority keep the kernel's order, whose first
	// entry is the one the kernel uses.
	slices.SortStableFunc(routes, compareRoutes)
	slices.SortFunc(neighs, func(a, b Neigh) int {
		if a.IfIndex != b.IfIndex {
			return a.IfIndex - b.IfIndex
		}
		return a.IP.Compare(b.IP)
	})
	slices.SortFunc(local, netip.Addr.Compare)
	local = slices.Compact(local)
	slices.SortFunc(links, func(a, b Link) int { return a.Index - b.Index })

	s := &Snapshot{
		Routes: routes,
		Neighs: neighs,
		Local:  local,
		Links:  links,
		Gen:    gen,
		best:   make(map[netip.Prefix]Route, len(routes)),
		neighs: make(map[neighKey]int, len(neighs)),
		local:  make(map[netip.Addr]struct{}, len(local)),
	}
	// Routes are sorted by priority within a prefix, so the first one seen is the best.
	for _, r := range routes {
		if _, ok := s.best[r.Dst]; !ok {
			s.best[r.Dst] = r
		}
	}
	for i, n := range neighs {
		s.neighs[neighKey{n.IfIndex, n.IP}] = i
	}
	for _, a := range local {
		s.local[a] = struct{}{}
	}
	return s
}

func compareRoutes(a, b Route) int {
	if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
		return c
	}
	if a.Dst.Bits() != b.Dst.Bits() {
		return a.Dst.Bits() - b.Dst.Bits()
	}
	return a.Priority - b.Priority
}
