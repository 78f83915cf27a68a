package fastpath

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/swanpath/swanpath/bridge/dataplane"
)

// fibCases: route changes across many FIBs, each built on the route
// tables of the one before the last (fib.go: only the rules that changed
// are deleted and added). After every SetFIB, the route the loop finds
// for each probe address is what a longest-prefix match over the routes
// gives (of equal prefixes the later; no match: none), whichever rules
// the tables held before; then a table too small for the routes (more
// than 1024 rules) is made anew. restore is put back at the end.
func fibCases(t *testing.T, fp *Fastpath, restore dataplane.FIB) {
	defer func() {
		if err := fp.SetFIB(restore); err != nil {
			t.Fatal(err)
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	pool := []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "10.1.2.128/25",
		"192.0.2.0/24", "198.51.100.0/22", "::/0", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64",
		"2001:db8:1:2::5/128", "fd00::/8"}
	probes := []string{"10.1.2.3", "10.1.2.4", "10.1.2.200", "10.1.3.1", "10.9.9.9", "192.0.2.77", "198.51.101.1",
		"203.0.113.1", "2001:db8:1:2::5", "2001:db8:1:2::6", "2001:db8:1:3::1", "2001:db8:2::1", "fd12::1", "2002::1"}
	gws := []string{"", "192.0.2.1", "192.0.2.2", "2001:db8::1"}
	randRoute := func(dst string) dataplane.Route {
		r := dataplane.Route{Dst: netip.MustParsePrefix(dst), Port: rng.IntN(2)}
		switch rng.IntN(6) {
		case 0:
			r.Local = true
		case 1:
			r.Blackhole = true
		}
		if g := gws[rng.IntN(len(gws))]; g != "" {
			r.Gateway = netip.MustParseAddr(g)
		}
		return r
	}
	check := func(round int, fib dataplane.FIB) {
		t.Helper()
		for _, ps := range probes {
			p := netip.MustParseAddr(ps)
			want, wantOK := lpmRef(fib.Routes, p, len(fp.ports))
			got, ok := fp.routeOf(p)
			if ok != wantOK || got != want {
				t.Fatalf("round %d: route of %s: %+v %v, want %+v %v\nroutes %+v", round, p, got, ok, want, wantOK, fib.Routes)
			}
		}
	}
	for round := range 40 {
		var fib dataplane.FIB
		for _, dst := range pool {
			if rng.IntN(2) == 0 {
				fib.Routes = append(fib.Routes, randRoute(dst))
			}
		}
		if rng.IntN(4) == 0 && len(fib.Routes) > 0 {
			// the same prefix twice: the later counts
			fib.Routes = append(fib.Routes, randRoute(fib.Routes[0].Dst.String()))
		}
		if err := fp.SetFIB(fib); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		check(round, fib)
	}
	// more rules than the tables were made for: made anew, larger
	var big dataplane.FIB
	for i := range 3000 {
		big.Routes = append(big.Routes, dataplane.Route{Dst: netip.MustParsePrefix(fmt.Sprintf("172.%d.%d.0/24", 16+i/256, i%256)), Port: 0})
	}
	big.Routes = append(big.Routes, dataplane.Route{Dst: netip.MustParsePrefix("10.1.2.0/24"), Local: true})
	for round := range 3 {
		if err := fp.SetFIB(big); err != nil {
			t.Fatalf("3001 routes, round %d: %v", round, err)
		}
		check(100+round, big)
		if r, ok := fp.routeOf(netip.MustParseAddr("172.27.183.9")); !ok || r.Port != 0 || r.Local || r.Blackhole {
			t.Fatalf("172.27.183.9 in 3001 routes: %+v %v", r, ok)
		}
		big.Routes = big.Routes[1:]
	}
}

// lpmRef is the longest-prefix match over routes as the loop sees it: of
// equal prefixes the later; a port beyond ports is a blackhole; a gateway
// of the other family is none.
func lpmRef(routes []dataplane.Route, dst netip.Addr, ports int) (dataplane.Route, bool) {
	best, bits := -1, -1
	for i, r := range routes {
		if r.Dst.Addr().Is4() == dst.Is4() && r.Dst.Contains(dst) && r.Dst.Bits() >= bits {
			best, bits = i, r.Dst.Bits()
		}
	}
	if best < 0 {
		return dataplane.Route{}, false
	}
	r := routes[best]
	out := dataplane.Route{Port: r.Port, Local: r.Local, Blackhole: !r.Local && (r.Blackhole || r.Port < 0 || r.Port >= ports)}
	if r.Gateway.IsValid() && r.Gateway.Is4() == dst.Is4() {
		out.Gateway = r.Gateway
	}
	if out.Local || out.Blackhole {
		out.Port = 0
	}
	return out, true
}
