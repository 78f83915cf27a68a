package fastpath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
)

// ownAddrs turns the gateway's own addresses into the sorted arrays the
// loop searches (struct sp_fib own4/own6): IPv4 as host-order integers,
// IPv6 as bytes, no duplicates. IPv4-mapped IPv6 addresses count as IPv4;
// invalid, unspecified and multicast addresses are left out (none can be
// the local end of IKE).
func ownAddrs(addrs []netip.Addr) (v4 []uint32, v6 [][16]byte) {
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		if a.Is4() {
			b := a.As4()
			v4 = append(v4, binary.BigEndian.Uint32(b[:]))
		} else {
			v6 = append(v6, a.As16())
		}
	}
	slices.Sort(v4)
	v4 = slices.Compact(v4)
	slices.SortFunc(v6, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	v6 = slices.Compact(v6)
	return v4, v6
}
