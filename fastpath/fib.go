package fastpath

// The FIB: routes in rte_lpm/rte_lpm6, neighbours, the gateway's own
// addresses, built aside and swapped.

// #include "dp_atomic.h"
import "C"

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/swanpath/swanpath/bridge/dataplane"
)

// routeSet is one of the two pairs of route tables (rte_lpm, rte_lpm6)
// that the FIBs alternate between (see struct sp_fib): what it holds, as
// next-hop slots, so that the next FIB built on it changes only the routes
// that changed.
type routeSet struct {
	lpm  *C.struct_rte_lpm
	lpm6 *C.struct_rte_lpm6
	max  int                     // rules each table has room for
	slot map[netip.Prefix]uint32 // its rules: prefix -> next-hop slot
	free []uint32                // slots given back
	next uint32                  // slots handed out
}

func newRouteSet(max int) (*routeSet, error) {
	rs := &routeSet{max: max, slot: map[netip.Prefix]uint32{}}
	rs.lpm = C.sp_lpm_new(C.uint32_t(max))
	rs.lpm6 = C.sp_lpm6_new(C.uint32_t(max))
	if rs.lpm == nil || rs.lpm6 == nil {
		rs.close()
		return nil, fmt.Errorf("route tables for %d routes: out of memory", max)
	}
	return rs, nil
}

func (rs *routeSet) close() {
	if rs.lpm != nil {
		C.rte_lpm_free(rs.lpm)
	}
	if rs.lpm6 != nil {
		C.rte_lpm6_free(rs.lpm6)
	}
	rs.lpm, rs.lpm6 = nil, nil
}

// update makes the tables hold exactly the prefixes of want, each with a
// slot of its own: rules that went are deleted, new ones added; a prefix
// that stays keeps its slot, whatever its next hop is now.
func (rs *routeSet) update(want map[netip.Prefix]int) error {
	for p, sl := range rs.slot {
		if _, ok := want[p]; ok {
			continue
		}
		var rc C.int
		if p.Addr().Is4() {
			rc = C.sp_lpm_del(rs.lpm, beFromAddr(p.Addr()), C.uint8_t(p.Bits()))
		} else {
			a := addrC(p.Addr())
			rc = C.rte_lpm6_delete(rs.lpm6, &a[0], C.uint8_t(p.Bits()))
		}
		if rc != 0 {
			return fmt.Errorf("FIB delete %s: errno %d", p, -rc)
		}
		delete(rs.slot, p)
		rs.free = append(rs.free, sl)
	}
	for p := range want {
		if _, ok := rs.slot[p]; ok {
			continue
		}
		var sl uint32
		if n := len(rs.free); n > 0 {
			sl, rs.free = rs.free[n-1], rs.free[:n-1]
		} else {
			sl = rs.next
			rs.next++
		}
		var rc C.int
		if p.Addr().Is4() {
			rc = C.sp_lpm_add(rs.lpm, beFromAddr(p.Addr()), C.uint8_t(p.Bits()), C.uint32_t(sl))
		} else {
			a := addrC(p.Addr())
			rc = C.rte_lpm6_add(rs.lpm6, &a[0], C.uint8_t(p.Bits()), C.uint32_t(sl))
		}
		if rc != 0 {
			rs.free = append(rs.free, sl)
			return fmt.Errorf("FIB add %s: errno %d", p, -rc)
		}
		rs.slot[p] = sl
	}
	return nil
}

// lpmParts are the rules of a route's prefix in the route tables: none
// for a default route, which the FIB keeps beside them (struct sp_fib's
// def4, def6).
func lpmParts(pfx netip.Prefix) []netip.Prefix {
	if pfx.Bits() == 0 {
		return nil
	}
	return []netip.Prefix{pfx.Masked()}
}

// SetFIB replaces the forwarding tables. The new FIB's routes go into the
// route tables that the FIB before the published one used (unreachable
// since), as a change of the rules they hold; next hops, neighbours and
// the gateway's own addresses are built anew. A neighbour change thus
// costs no route table, and a route change only its rules.
func (f *Fastpath) SetFIB(fib dataplane.FIB) error {
	f.fib.Lock()
	defer f.fib.Unlock()
	routes := fib.Routes
	var neighs []dataplane.Neigh
	for _, n := range fib.Neighs {
		if n.IP.IsValid() && len(n.MAC) == 6 && n.Port >= 0 && n.Port < len(f.ports) {
			neighs = append(neighs, n)
		}
	}
	// each rule and the route it stands for; of equal prefixes the
	// later route wins (as rte_lpm_add of an existing rule would have it)
	want := map[netip.Prefix]int{}
	def4, def6 := -1, -1
	for i, r := range routes {
		for _, p := range lpmParts(r.Dst) {
			want[p] = i
		}
		switch {
		case r.Dst.Bits() != 0:
		case r.Dst.Addr().Is4():
			def4 = i
		default:
			def6 = i
		}
	}
	rs := f.fib.sets[f.fib.next]
	if rs != nil && len(want) > rs.max {
		rs.close()
		rs = nil
	}
	if rs == nil {
		var err error
		if rs, err = newRouteSet(max(1024, 2*len(want))); err != nil {
			f.fib.sets[f.fib.next] = nil
			return err
		}
		f.fib.sets[f.fib.next] = rs
	}
	if err := rs.update(want); err != nil {
		// what it holds is unknown now: the next FIB starts afresh
		rs.close()
		f.fib.sets[f.fib.next] = nil
		return err
	}
	// the rules' slots, then one for each family's default route
	n := rs.next + 2
	t := C.sp_fib_new(C.uint32_t(n), C.uint32_t(len(neighs)), rs.lpm, rs.lpm6)
	if t == nil {
		return fmt.Errorf("build FIB: out of memory")
	}
	nhs := unsafe.Slice(t.nh, n+1)
	slots := make(map[uint32]int, len(want)+2)
	for p, i := range want {
		slots[rs.slot[p]] = i
	}
	if def4 >= 0 {
		slots[rs.next] = def4
		t.def4 = C.uint32_t(rs.next + 1)
	}
	if def6 >= 0 {
		slots[rs.next+1] = def6
		t.def6 = C.uint32_t(rs.next + 2)
	}
	for sl, i := range slots {
		r := routes[i]
		nh := &nhs[sl]
		nh.port = C.uint8_t(r.Port)
		switch {
		case r.Local:
			nh.kind = C.SP_NH_LOCAL
		case r.Blackhole || r.Port < 0 || r.Port >= len(f.ports):
			nh.kind = C.SP_NH_BLACKHOLE
		default:
			nh.kind = C.SP_NH_UNICAST
		}
		v4 := r.Dst.Addr().Is4()
		if r.Gateway.IsValid() && r.Gateway.Is4() == v4 {
			if v4 {
				nh.gw = beFromAddr(r.Gateway)
			} else {
				nh.gw6 = addrC(r.Gateway)
			}
		}
	}
	for _, r := range routes {
		// the gateway's own addresses: sources of ICMP errors
		v4 := r.Dst.Addr().Is4()
		if r.Local && r.Dst.IsSingleIP() && !r.Dst.Addr().IsLoopback() && !r.Dst.Addr().IsLinkLocalUnicast() {
			if v4 && t.src4 == 0 {
				t.src4 = beFromAddr(r.Dst.Addr())
			} else if !v4 && t.src6 == [16]C.uint8_t{} {
				t.src6 = addrC(r.Dst.Addr())
			}
		}
	}
	own4, own6 := ownAddrs(fib.Addrs)
	var p4 *C.uint32_t
	var p6 *C.uint8_t
	if len(own4) > 0 {
		p4 = (*C.uint32_t)(unsafe.Pointer(&own4[0]))
	}
	if len(own6) > 0 {
		p6 = (*C.uint8_t)(unsafe.Pointer(&own6[0][0]))
	}
	if rc := C.sp_fib_set_own(t, C.uint32_t(len(own4)), p4, C.uint32_t(len(own6)), p6); rc != 0 {
		C.sp_fib_free(t)
		return fmt.Errorf("FIB own addresses (%d IPv4, %d IPv6): errno %d", len(own4), len(own6), -rc)
	}
	for i, n := range neighs {
		var rc C.int
		mac := (*C.uint8_t)(unsafe.Pointer(&n.MAC[0]))
		if n.IP.Is4() {
			rc = C.sp_fib_add_neigh(t, beFromAddr(n.IP), C.uint32_t(n.Port), mac, C.uint32_t(i))
		} else {
			a := addrC(n.IP)
			rc = C.sp_fib_add_neigh6(t, &a[0], C.uint32_t(n.Port), mac, C.uint32_t(i))
		}
		if rc != 0 {
			C.sp_fib_free(t)
			return fmt.Errorf("neighbour add %s: errno %d", n.IP, -rc)
		}
	}
	f.mu.Lock()
	old := f.mu.fib
	C.sp_publish_fib(f.dp, t)
	f.mu.fib = t
	C.sp_synchronize(f.dp)
	f.mu.Unlock()
	// no worker reads old any more, nor its route tables: the next FIB
	// is built on them
	f.fib.next = 1 - f.fib.next
	C.sp_fib_free(old)
	return nil
}

// publishedFIB is the FIB the workers read from their next iteration on
// (without f.mu: SetFIB holds it until the workers have moved on).
func (f *Fastpath) publishedFIB() unsafe.Pointer { return unsafe.Pointer(C.sp_fib_published(f.dp)) }

// routeOf is the route of dst in the published FIB as the loop finds it
// (Port, Gateway, Local, Blackhole set; Dst not), and whether there is one.
func (f *Fastpath) routeOf(dst netip.Addr) (dataplane.Route, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.fib == nil {
		return dataplane.Route{}, false
	}
	var nh C.struct_sp_nexthop
	a := dst.As16()
	v6, b := C.int(1), a[:]
	if dst.Is4() {
		v4 := dst.As4()
		v6, b = 0, v4[:]
	}
	if C.sp_fib_route(f.mu.fib, v6, (*C.uint8_t)(unsafe.Pointer(&b[0])), &nh) != 0 {
		return dataplane.Route{}, false
	}
	r := dataplane.Route{Port: int(nh.port), Local: nh.kind == C.SP_NH_LOCAL, Blackhole: nh.kind == C.SP_NH_BLACKHOLE}
	if dst.Is4() && nh.gw != 0 {
		var g [4]byte
		binary.NativeEndian.PutUint32(g[:], uint32(nh.gw)) // the bytes as they are: network order
		r.Gateway = netip.AddrFrom4(g)
	} else if !dst.Is4() && nh.gw6 != [16]C.uint8_t{} {
		var g [16]byte
		for i := range g {
			g[i] = byte(nh.gw6[i])
		}
		r.Gateway = netip.AddrFrom16(g)
	}
	if r.Local || r.Blackhole {
		r.Port = 0
	}
	return r, true
}
