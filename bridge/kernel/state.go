package kernel

import (
	"bytes"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeKey is how the kernel tells main-table routes apart when it adds or replaces them
// (fib_table_insert / fib6_add_rt2node compare prefix, TOS and priority). Several routes
// may share a key: IPv4 "ip route append", and IPv6 link routes such as fe80::/64 that
// exist once per interface. They are told apart by their first hop.
type routeKey struct {
	dst      netip.Prefix
	tos      int
	priority int
}

// tables is the Mirror's mutable copy of the kernel state. Only the Run goroutine touches
// it; readers get immutable Snapshots built from it.
type tables struct {
	routes map[routeKey][]Route
	neighs map[neighKey]Neigh
	addrs  map[addrKey]struct{}
	links  map[int]Link
}

// addrKey keeps an address per interface so that removing it from one interface leaves
// it local when it is also configured on another.
type addrKey struct {
	ifindex int
	ip      netip.Addr
}

func newTables() *tables {
	return &tables{
		routes: make(map[routeKey][]Route),
		neighs: make(map[neighKey]Neigh),
		addrs:  make(map[addrKey]struct{}),
		links:  make(map[int]Link),
	}
}

// snapshot copies the tables into a new immutable Snapshot.
func (t *tables) snapshot(gen uint64) *Snapshot {
	var routes []Route
	for _, rs := range t.routes {
		routes = append(routes, rs...)
	}
	neighs := make([]Neigh, 0, len(t.neighs))
	for _, n := range t.neighs {
		neighs = append(neighs, n)
	}
	local := make([]netip.Addr, 0, len(t.addrs))
	for k := range t.addrs {
		local = append(local, k.ip)
	}
	links := make([]Link, 0, len(t.links))
	for _, l := range t.links {
		links = append(links, l)
	}
	return newSnapshot(routes, neighs, local, links, gen)
}

// convertRoute turns a netlink route into a Route. It reports false for routes the mirror
// does not keep: other tables, cached clones, broadcast/local/multicast types, routes
// without a usable destination family.
func convertRoute(nr *netlink.Route) (Route, routeKey, bool) {
	if nr.Table != unix.RT_TABLE_MAIN || nr.Flags&unix.RTM_F_CLONED != 0 {
		return Route{}, routeKey{}, false
	}
	var bits int
	switch nr.Family {
	case unix.AF_INET:
		bits = 32
	case unix.AF_INET6:
		bits = 128
	default:
		return Route{}, routeKey{}, false
	}
	var dst netip.Prefix
	if nr.Dst == nil || nr.Dst.IP == nil {
		// A default route carries no RTA_DST at all.
		dst = netip.PrefixFrom(zeroAddr(bits), 0)
	} else {
		a, ok := netip.AddrFromSlice(nr.Dst.IP)
		if !ok {
			return Route{}, routeKey{}, false
		}
		if nr.Family == unix.AF_INET {
			a = a.Unmap()
		}
		ones, _ := nr.Dst.Mask.Size()
		dst = netip.PrefixFrom(a, ones).Masked()
	}
	r := Route{Dst: dst, Priority: nr.Priority}
	switch nr.Type {
	case unix.RTN_UNICAST:
		r.IfIndex, r.Gateway = firstHop(nr)
		if r.IfIndex == 0 {
			return Route{}, routeKey{}, false
		}
	case unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT, unix.RTN_THROW:
		// A throw route in the main table ends the lookup there, which for a gateway
		// with no further rules is the same as no route.
		r.Reject = true
	default:
		return Route{}, routeKey{}, false
	}
	return r, routeKey{dst: dst, tos: nr.Tos, priority: nr.Priority}, true
}

// firstHop returns the output interface and gateway of a route, taking the first next hop
// of a multipath route: the fast path does not spread flows over next hops (yet).
func firstHop(nr *netlink.Route) (int, netip.Addr) {
	ifindex, gw := nr.LinkIndex, ipAddr(nr.Gw)
	if len(nr.MultiPath) > 0 && nr.MultiPath[0] != nil {
		ifindex, gw = nr.MultiPath[0].LinkIndex, ipAddr(nr.MultiPath[0].Gw)
		if !gw.IsValid() {
			gw = viaAddr(nr.MultiPath[0].Via)
		}
	}
	if !gw.IsValid() {
		// RFC 5549 style IPv4 route through an IPv6 next hop comes as RTA_VIA.
		gw = viaAddr(nr.Via)
	}
	return ifindex, gw
}

func viaAddr(d netlink.Destination) netip.Addr {
	if v, ok := d.(*netlink.Via); ok && v != nil {
		return ipAddr(v.Addr)
	}
	return netip.Addr{}
}

// applyRoute applies one route notification to the tables and reports whether anything
// changed.
func (t *tables) applyRoute(u *netlink.RouteUpdate) bool {
	r, key, ok := convertRoute(&u.Route)
	if !ok {
		return false
	}
	cur := t.routes[key]
	same := func(x Route) bool { return x.IfIndex == r.IfIndex && x.Gateway == r.Gateway && x.Reject == r.Reject }
	switch u.Type {
	case unix.RTM_NEWROUTE:
		if u.NlFlags&unix.NLM_F_REPLACE != 0 {
			// "ip route replace" swaps the first route of the key for the new one.
			if len(cur) > 0 && cur[0] == r {
				return false
			}
			if len(cur) == 0 {
				t.routes[key] = []Route{r}
			} else {
				cur[0] = r
			}
			return true
		}
		if i := slices.IndexFunc(cur, same); i >= 0 {
			if cur[i] == r {
				return false
			}
			cur[i] = r
			return true
		}
		t.routes[key] = append(cur, r)
		return true
	case unix.RTM_DELROUTE:
		n := slices.DeleteFunc(cur, same)
		if len(n) == len(cur) {
			return false
		}
		if len(n) == 0 {
			delete(t.routes, key)
		} else {
			t.routes[key] = n
		}
		return true
	}
	return false
}

// usableStates are the NUD states in which the kernel would transmit to the entry's MAC
// without resolving first; see neigh_event_send and NUD_VALID in include/net/neighbour.h.
const usableStates = unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE |
	unix.NUD_PERMANENT | unix.NUD_NOARP

// convertNeigh returns the mirrored form of a neighbour and whether it is usable.
func convertNeigh(nn *netlink.Neigh) (neighKey, Neigh, bool) {
	if nn.Family != unix.AF_INET && nn.Family != unix.AF_INET6 {
		return neighKey{}, Neigh{}, false // bridge FDB entries share the NEIGH group
	}
	ip := ipAddr(nn.IP)
	if !ip.IsValid() {
		return neighKey{}, Neigh{}, false
	}
	key := neighKey{nn.LinkIndex, ip}
	if nn.Flags&unix.NTF_PROXY != 0 || nn.State&usableStates == 0 || len(nn.HardwareAddr) != 6 {
		return key, Neigh{}, false
	}
	mac := slices.Clone(nn.HardwareAddr)
	return key, Neigh{IfIndex: nn.LinkIndex, IP: ip, MAC: mac, State: nn.State}, true
}

// applyNeigh applies one neighbour notification; unusable states remove the entry.
func (t *tables) applyNeigh(u *netlink.NeighUpdate) bool {
	key, n, usable := convertNeigh(&u.Neigh)
	if !key.ip.IsValid() {
		return false
	}
	old, had := t.neighs[key]
	if u.Type == unix.RTM_NEWNEIGH && usable {
		if had && old.State == n.State && bytes.Equal(old.MAC, n.MAC) {
			return false
		}
		t.neighs[key] = n
		return true
	}
	if u.Neigh.Flags&unix.NTF_PROXY != 0 {
		return false // proxy entries live in their own table, not among real neighbours
	}
	delete(t.neighs, key)
	return had
}

func (t *tables) applyAddr(u *netlink.AddrUpdate) bool {
	ip := ipAddr(u.LinkAddress.IP)
	if !ip.IsValid() {
		return false
	}
	key := addrKey{u.LinkIndex, ip}
	_, had := t.addrs[key]
	if u.NewAddr {
		t.addrs[key] = struct{}{}
		return !had
	}
	delete(t.addrs, key)
	return had
}

func convertLink(l netlink.Link) Link {
	a := l.Attrs()
	return Link{
		Index:   a.Index,
		Name:    a.Name,
		MAC:     slices.Clone(a.HardwareAddr),
		Up:      a.Flags&net.FlagUp != 0,
		LowerUp: a.RawFlags&unix.IFF_LOWER_UP != 0,
	}
}

// applyLink applies one link notification. It also reports whether the link went away or
// changed state, because the kernel flushes IPv4 routes of a device that goes down
// without sending RTM_DELROUTE for them (fib_sync_down_dev, net/ipv4/fib_semantics.c):
// only a dump can tell what is left.
func (t *tables) applyLink(u *netlink.LinkUpdate) (changed, needResync bool) {
	if u.Link == nil || u.Link.Attrs() == nil {
		return false, false
	}
	l := convertLink(u.Link)
	old, had := t.links[l.Index]
	if u.Header.Type == unix.RTM_DELLINK {
		delete(t.links, l.Index)
		return had, had
	}
	if had && old.Name == l.Name && bytes.Equal(old.MAC, l.MAC) && old.Up == l.Up && old.LowerUp == l.LowerUp {
		return false, false
	}
	t.links[l.Index] = l
	return true, had && (old.Up != l.Up || old.LowerUp != l.LowerUp)
}

func ipAddr(ip net.IP) netip.Addr {
	if len(ip) == 0 {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func zeroAddr(bits int) netip.Addr {
	if bits == 32 {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
