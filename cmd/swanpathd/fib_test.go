package main

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/kernel"
)

// The FIB carries the gateway's own addresses exactly as the kernel has
// them on its interfaces (loopback left out), beside the local routes,
// which may be wider: a local route for a prefix adds no own address.
func TestTranslateOwnAddresses(t *testing.T) {
	f := &fibFeeder{portOf: map[int]int{7: 0}}
	s := &kernel.Snapshot{
		Routes: []kernel.Route{
			{Dst: netip.MustParsePrefix("192.0.2.0/24"), IfIndex: 7},
			// out of an interface the fast path does not own: Local
			{Dst: netip.MustParsePrefix("10.9.0.0/16"), IfIndex: 3},
		},
		Local: []netip.Addr{
			netip.MustParseAddr("127.0.0.1"),
			netip.MustParseAddr("192.0.2.1"),
			netip.MustParseAddr("198.51.100.7"),
			netip.MustParseAddr("::1"),
			netip.MustParseAddr("fd00:192::1"),
			netip.MustParseAddr("fe80::1"),
		},
	}
	fib := f.translate(s)
	want := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("198.51.100.7"),
		netip.MustParseAddr("fd00:192::1"),
		netip.MustParseAddr("fe80::1"),
	}
	if !slices.Equal(fib.Addrs, want) {
		t.Fatalf("Addrs %v, want %v", fib.Addrs, want)
	}
	// the wide local route is still there, as a route: not an address
	if !slices.Contains(fib.Routes, dataplane.Route{Dst: netip.MustParsePrefix("10.9.0.0/16"), Local: true}) {
		t.Fatalf("routes %v lack the local 10.9.0.0/16", fib.Routes)
	}
	for _, a := range fib.Addrs {
		if netip.MustParsePrefix("10.9.0.0/16").Contains(a) {
			t.Fatalf("own address %s comes from a local route", a)
		}
	}
}
