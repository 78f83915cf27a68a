package fib

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/kernel"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
	mac1 = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	mac2 = net.HardwareAddr{2, 0, 0, 0, 0, 2}
)

// ports: TAP ifindex 7 is port 0, 8 is port 1; 3 is the kernel's own.
var ports = map[int]int{7: 0, 8: 1}

func TestTranslate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    kernel.Snapshot
		want dataplane.FIB
	}{
		{name: "empty"},
		{
			name: "routes out of the ports, with and without gateway",
			s: kernel.Snapshot{Routes: []kernel.Route{
				{Dst: pfx("0.0.0.0/0"), IfIndex: 8, Gateway: addr("192.0.2.254")},
				{Dst: pfx("10.1.0.0/24"), IfIndex: 7},
				{Dst: pfx("2001:db8::/64"), IfIndex: 8, Gateway: addr("fe80::1")},
			}},
			want: dataplane.FIB{Routes: []dataplane.Route{
				{Dst: pfx("0.0.0.0/0"), Port: 1, Gateway: addr("192.0.2.254")},
				{Dst: pfx("10.1.0.0/24"), Port: 0},
				{Dst: pfx("2001:db8::/64"), Port: 1, Gateway: addr("fe80::1")},
			}},
		},
		{
			name: "the best of equal prefixes only",
			s: kernel.Snapshot{Routes: []kernel.Route{
				{Dst: pfx("10.2.0.0/16"), IfIndex: 7, Priority: 10},
				{Dst: pfx("10.2.0.0/16"), IfIndex: 8, Priority: 20},
				{Dst: pfx("10.3.0.0/16"), Reject: true, Priority: 1},
				{Dst: pfx("10.3.0.0/16"), IfIndex: 8, Priority: 5},
			}},
			want: dataplane.FIB{Routes: []dataplane.Route{
				{Dst: pfx("10.2.0.0/16"), Port: 0},
				{Dst: pfx("10.3.0.0/16"), Blackhole: true},
			}},
		},
		{
			name: "reject routes are blackholes, foreign interfaces local",
			s: kernel.Snapshot{Routes: []kernel.Route{
				{Dst: pfx("10.9.0.0/16"), IfIndex: 3},
				{Dst: pfx("10.66.0.0/16"), Reject: true},
			}},
			want: dataplane.FIB{Routes: []dataplane.Route{
				{Dst: pfx("10.9.0.0/16"), Local: true},
				{Dst: pfx("10.66.0.0/16"), Blackhole: true},
			}},
		},
		{
			// the FIB carries the gateway's own addresses exactly as the
			// kernel has them (loopback left out), beside host routes for
			// every one of them
			name: "own addresses",
			s: kernel.Snapshot{Local: []netip.Addr{
				addr("127.0.0.1"), addr("192.0.2.1"), addr("::1"), addr("fe80::1"),
			}},
			want: dataplane.FIB{
				Routes: []dataplane.Route{
					{Dst: pfx("127.0.0.1/32"), Local: true},
					{Dst: pfx("192.0.2.1/32"), Local: true},
					{Dst: pfx("::1/128"), Local: true},
					{Dst: pfx("fe80::1/128"), Local: true},
				},
				Addrs: []netip.Addr{addr("192.0.2.1"), addr("fe80::1")},
			},
		},
		{
			name: "neighbours on the ports only",
			s: kernel.Snapshot{Neighs: []kernel.Neigh{
				{IfIndex: 3, IP: addr("10.9.0.1"), MAC: mac1},
				{IfIndex: 7, IP: addr("10.1.0.2"), MAC: mac1},
				{IfIndex: 8, IP: addr("fe80::1"), MAC: mac2},
			}},
			want: dataplane.FIB{Neighs: []dataplane.Neigh{
				{Port: 0, IP: addr("10.1.0.2"), MAC: mac1},
				{Port: 1, IP: addr("fe80::1"), MAC: mac2},
			}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Translate(&tc.s, ports); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// A local route for a whole prefix adds no own address: only those
// configured are the gateway's.
func TestTranslateWideLocalRouteIsNoAddress(t *testing.T) {
	s := &kernel.Snapshot{
		Routes: []kernel.Route{{Dst: pfx("10.9.0.0/16"), IfIndex: 3}},
		Local:  []netip.Addr{addr("198.51.100.7")},
	}
	fib := Translate(s, ports)
	if !reflect.DeepEqual(fib.Addrs, []netip.Addr{addr("198.51.100.7")}) {
		t.Fatalf("Addrs %v", fib.Addrs)
	}
}

type fakeTarget struct {
	fibs []dataplane.FIB
	err  error
}

func (f *fakeTarget) SetFIB(fib dataplane.FIB) error {
	if f.err != nil {
		return f.err
	}
	f.fibs = append(f.fibs, fib)
	return nil
}

type fakeResolver struct{ asked []string }

func (f *fakeResolver) Resolve(ifindex int, ip netip.Addr) error {
	f.asked = append(f.asked, netip.AddrPortFrom(ip, uint16(ifindex)).String())
	return nil
}

// The fast path gets a FIB when it changed, and again after a failure.
func TestFeederUpdate(t *testing.T) {
	dp, res := &fakeTarget{}, &fakeResolver{}
	f := New(slog.New(slog.DiscardHandler), dp, res, []int{7, 8})
	s := &kernel.Snapshot{Routes: []kernel.Route{{Dst: pfx("10.1.0.0/24"), IfIndex: 7}},
		Neighs: []kernel.Neigh{{IfIndex: 7, IP: addr("10.1.0.2"), MAC: mac1, State: 2}}}
	f.Update(s)
	stale := *s
	stale.Neighs = []kernel.Neigh{{IfIndex: 7, IP: addr("10.1.0.2"), MAC: mac1, State: 4}}
	f.Update(&stale) // a neighbour's state alone: nothing new
	if len(dp.fibs) != 1 {
		t.Fatalf("%d FIBs set, want 1", len(dp.fibs))
	}
	moved := stale
	moved.Neighs = []kernel.Neigh{{IfIndex: 7, IP: addr("10.1.0.2"), MAC: mac2}}
	dp.err = errors.New("no memory")
	f.Update(&moved)
	dp.err = nil
	f.Update(&moved) // the failed one is tried again
	if len(dp.fibs) != 2 || !reflect.DeepEqual(dp.fibs[1].Neighs[0].MAC, mac2) {
		t.Fatalf("FIBs %+v", dp.fibs)
	}
	// next hops are resolved on the port's TAP; unknown ports are ignored
	f.Resolve(1, addr("192.0.2.254"))
	f.Resolve(2, addr("192.0.2.253"))
	f.Resolve(-1, addr("192.0.2.252"))
	if !reflect.DeepEqual(res.asked, []string{"192.0.2.254:8"}) {
		t.Fatalf("resolved %v", res.asked)
	}
}
