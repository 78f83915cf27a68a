package fastpath

// The FIB: routes in rte_lpm/rte_lpm6, neighbours, the gateway's own
// addresses, built aside and swapped.

// #include "dp.h"
import "C"

import (
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/swanpath/swanpath/bridge/dataplane"
)

// SetFIB replaces the forwarding tables.
func (f *Fastpath) SetFIB(fib dataplane.FIB) error {
	routes := fib.Routes
	var neighs []dataplane.Neigh
	for _, n := range fib.Neighs {
		if n.IP.IsValid() && len(n.MAC) == 6 && n.Port >= 0 && n.Port < len(f.ports) {
			neighs = append(neighs, n)
		}
	}
	t := C.sp_fib_new(C.uint32_t(len(routes)), C.uint32_t(len(neighs)))
	if t == nil {
		return fmt.Errorf("build FIB: out of memory")
	}
	nhs := unsafe.Slice(t.nh, len(routes)+1)
	for i, r := range routes {
		nh := &nhs[i]
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
		// rte_lpm and rte_lpm6 take depths from 1: a default route is
		// two halves
		pfx := r.Dst.Masked()
		parts := []netip.Prefix{pfx}
		if pfx.Bits() == 0 && v4 {
			parts = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
		} else if pfx.Bits() == 0 {
			parts = []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
		}
		for _, p := range parts {
			var rc C.int
			if v4 {
				rc = C.sp_fib_add_route(t, beFromAddr(p.Addr()), C.uint8_t(p.Bits()), C.uint32_t(i))
			} else {
				a := addrC(p.Addr())
				rc = C.sp_fib_add_route6(t, &a[0], C.uint8_t(p.Bits()), C.uint32_t(i))
			}
			if rc != 0 {
				C.sp_fib_free(t)
				return fmt.Errorf("FIB add %s: errno %d", p, -rc)
			}
		}
		// the gateway's own addresses: sources of ICMP errors
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
	defer f.mu.Unlock()
	old := f.mu.fib
	C.sp_publish_fib(f.dp, t)
	f.mu.fib = t
	C.sp_synchronize(f.dp)
	C.sp_fib_free(old)
	return nil
}
