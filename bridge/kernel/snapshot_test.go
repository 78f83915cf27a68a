package kernel

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func pfx(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func TestLookup(t *testing.T) {
	routes := []Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), IfIndex: 2, Gateway: netip.MustParseAddr("10.0.0.1"), Priority: 100},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), IfIndex: 3, Gateway: netip.MustParseAddr("10.1.0.1"), Priority: 10},
		{Dst: netip.MustParsePrefix("10.0.0.0/24"), IfIndex: 2},
		{Dst: netip.MustParsePrefix("192.0.2.0/24"), Reject: true},
		{Dst: netip.MustParsePrefix("192.0.2.128/25"), IfIndex: 4, Gateway: netip.MustParseAddr("10.0.0.9")},
		{Dst: netip.MustParsePrefix("2001:db8::/32"), IfIndex: 5, Gateway: netip.MustParseAddr("fe80::1")},
	}
	s := newSnapshot(routes, nil, nil, nil, 1)
	tests := []struct {
		dst    string
		ok     bool
		ifidx  int
		prefix string
	}{
		{"10.0.0.5", true, 2, "10.0.0.0/24"},
		{"8.8.8.8", true, 3, "0.0.0.0/0"}, // lower metric wins
		{"192.0.2.1", false, 0, "192.0.2.0/24"},
		{"192.0.2.200", true, 4, "192.0.2.128/25"},
		{"::ffff:10.0.0.5", true, 2, "10.0.0.0/24"},
		{"2001:db8::1", true, 5, "2001:db8::/32"},
		{"2001:db9::1", false, 0, ""},
	}
	for _, tc := range tests {
		r, ok := s.Lookup(netip.MustParseAddr(tc.dst))
		if ok != tc.ok || r.IfIndex != tc.ifidx || (tc.prefix != "" && r.Dst.String() != tc.prefix) {
			t.Errorf("Lookup(%s) = %+v, %v; want ifindex %d prefix %q ok %v", tc.dst, r, ok, tc.ifidx, tc.prefix, tc.ok)
		}
	}
}

func TestApplyRoute(t *testing.T) {
	tb := newTables()
	add := func(flags uint16, r netlink.Route) bool {
		return tb.applyRoute(&netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, NlFlags: flags, Route: r})
	}
	del := func(r netlink.Route) bool {
		return tb.applyRoute(&netlink.RouteUpdate{Type: unix.RTM_DELROUTE, Route: r})
	}
	main := unix.RT_TABLE_MAIN
	v4 := unix.AF_INET
	r1 := netlink.Route{Family: v4, Table: main, Type: unix.RTN_UNICAST, Dst: pfx("192.0.2.0/24"), LinkIndex: 2, Gw: net.ParseIP("10.0.0.1").To4()}
	r2 := r1
	r2.Gw = net.ParseIP("10.0.0.2").To4()
	if !add(unix.NLM_F_CREATE, r1) || add(unix.NLM_F_CREATE, r1) {
		t.Fatal("add r1: want changed once")
	}
	if !add(unix.NLM_F_APPEND, r2) || len(tb.routes) != 1 || len(tb.snapshot(1).Routes) != 2 {
		t.Fatalf("append r2: routes %+v", tb.routes)
	}
	r3 := r1
	r3.Gw = net.ParseIP("10.0.0.3").To4()
	if !add(unix.NLM_F_REPLACE, r3) {
		t.Fatal("replace: want changed")
	}
	if got, _ := tb.snapshot(2).Lookup(netip.MustParseAddr("192.0.2.1")); got.Gateway != netip.MustParseAddr("10.0.0.3") {
		t.Fatalf("after replace: lookup %+v", got)
	}
	if !del(r3) || !del(r2) || len(tb.routes) != 0 {
		t.Fatalf("delete: routes left %+v", tb.routes)
	}
	// Not mirrored: other tables, local type, cloned.
	other := r1
	other.Table = 100
	local := r1
	local.Type = unix.RTN_LOCAL
	cloned := r1
	cloned.Flags = unix.RTM_F_CLONED
	for _, r := range []netlink.Route{other, local, cloned} {
		if add(unix.NLM_F_CREATE, r) {
			t.Errorf("route %+v should be ignored", r)
		}
	}
	// Default route without RTA_DST, multipath first hop, blackhole.
	def := netlink.Route{Family: v4, Table: main, Type: unix.RTN_UNICAST, MultiPath: []*netlink.NexthopInfo{
		{LinkIndex: 7, Gw: net.ParseIP("10.7.0.1").To4()}, {LinkIndex: 8, Gw: net.ParseIP("10.8.0.1").To4()}}}
	bh := netlink.Route{Family: v4, Table: main, Type: unix.RTN_BLACKHOLE, Dst: pfx("198.51.100.0/24")}
	add(unix.NLM_F_CREATE, def)
	add(unix.NLM_F_CREATE, bh)
	s := tb.snapshot(3)
	if r, ok := s.Lookup(netip.MustParseAddr("203.0.113.1")); !ok || r.IfIndex != 7 || r.Gateway != netip.MustParseAddr("10.7.0.1") {
		t.Errorf("default multipath: %+v %v", r, ok)
	}
	if _, ok := s.Lookup(netip.MustParseAddr("198.51.100.1")); ok {
		t.Error("blackhole: want no route")
	}
}

func TestApplyNeigh(t *testing.T) {
	tb := newTables()
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	n := netlink.Neigh{LinkIndex: 3, Family: unix.AF_INET, State: unix.NUD_REACHABLE, IP: net.ParseIP("10.0.0.2"), HardwareAddr: mac}
	upd := func(typ uint16, state int) bool {
		n.State = state
		return tb.applyNeigh(&netlink.NeighUpdate{Type: typ, Neigh: n})
	}
	if !upd(unix.RTM_NEWNEIGH, unix.NUD_REACHABLE) || upd(unix.RTM_NEWNEIGH, unix.NUD_REACHABLE) {
		t.Fatal("add reachable: want changed once")
	}
	if !upd(unix.RTM_NEWNEIGH, unix.NUD_STALE) {
		t.Fatal("stale: want changed")
	}
	got, ok := tb.snapshot(1).NeighFor(3, netip.MustParseAddr("10.0.0.2"))
	if !ok || got.MAC.String() != mac.String() {
		t.Fatalf("NeighFor: %+v %v", got, ok)
	}
	if !upd(unix.RTM_NEWNEIGH, unix.NUD_FAILED) || len(tb.neighs) != 0 {
		t.Fatal("failed: want removed")
	}
	if upd(unix.RTM_NEWNEIGH, unix.NUD_INCOMPLETE) || upd(unix.RTM_DELNEIGH, unix.NUD_NONE) {
		t.Fatal("incomplete/delete of absent entry: want unchanged")
	}
	br := n
	br.Family = unix.AF_BRIDGE
	if tb.applyNeigh(&netlink.NeighUpdate{Type: unix.RTM_NEWNEIGH, Neigh: br}) {
		t.Fatal("bridge fdb entry: want ignored")
	}
}

func TestResolveRateLimit(t *testing.T) {
	m := NewMirror(nil)
	ip := netip.MustParseAddr("10.0.0.2")
	if err := m.Resolve(2, ip); err == nil {
		t.Fatal("Resolve before Run: want ErrNotRunning")
	}
	q := make(chan neighKey, 4)
	m.setResolveQueue(q)
	for range 3 {
		if err := m.Resolve(2, ip); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Resolve(3, ip); err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 {
		t.Fatalf("queued %d requests, want 2 (one per next hop)", len(q))
	}
	if err := m.Resolve(0, ip); err == nil {
		t.Fatal("ifindex 0: want error")
	}
}
