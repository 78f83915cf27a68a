package fastpath

// Go values as the C structs of dp.h hold them.

// #include "dp.h"
import "C"

import (
	"encoding/binary"
	"net/netip"
)

func beFromAddr(a netip.Addr) C.uint32_t {
	b := a.As4()
	// network order in memory = the bytes as they are
	return C.uint32_t(binary.NativeEndian.Uint32(b[:]))
}

// addrC is an address as the C structs keep it: network order, IPv4 in
// the first 4 bytes.
func addrC(a netip.Addr) (c [16]C.uint8_t) {
	for i, b := range a.AsSlice() {
		c[i] = C.uint8_t(b)
	}
	return c
}

// maskC is prefix p's mask as two 64-bit words in memory order, and its
// masked address the same way (struct sp_policy6).
func maskC(p netip.Prefix) (addr, mask [2]C.uint64_t) {
	a := p.Masked().Addr().As16()
	var m [16]byte
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	for w := range 2 {
		addr[w] = C.uint64_t(binary.NativeEndian.Uint64(a[w*8:]))
		mask[w] = C.uint64_t(binary.NativeEndian.Uint64(m[w*8:]))
	}
	return addr, mask
}

func boolC(b bool) C.uint8_t {
	if b {
		return 1
	}
	return 0
}

func maskBE(p netip.Prefix) C.uint32_t {
	if p.Bits() == 0 {
		return 0
	}
	m := ^uint32(0) << (32 - p.Bits())
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], m)
	return C.uint32_t(binary.NativeEndian.Uint32(b[:]))
}
