package fastpath

import (
	"net/netip"
	"slices"
	"testing"
)

// ownAddrs gives the loop's binary search what it needs: each family
// sorted (IPv4 by value in host order, IPv6 by bytes), no duplicates,
// IPv4-mapped addresses as IPv4, nothing that cannot be a local end. No
// EAL needed.
func TestOwnAddrs(t *testing.T) {
	in := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("fd00:192::2"),
		netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("::ffff:192.0.2.1"), // the same as the first
		netip.MustParseAddr("fd00:192::1"),
		netip.MustParseAddr("0.0.0.0"),
		netip.MustParseAddr("224.0.0.1"),
		netip.MustParseAddr("ff02::1"),
		netip.MustParseAddr("::"),
		{},
		netip.MustParseAddr("200.0.0.1"), // above 2^31: unsigned order
		netip.MustParseAddr("fd00:192::1"),
	}
	v4, v6 := ownAddrs(in)
	if want := []uint32{0x0a000001, 0xc0000201, 0xc8000001}; !slices.Equal(v4, want) {
		t.Fatalf("IPv4 %x, want %x", v4, want)
	}
	want6 := [][16]byte{netip.MustParseAddr("fd00:192::1").As16(), netip.MustParseAddr("fd00:192::2").As16()}
	if !slices.Equal(v6, want6) {
		t.Fatalf("IPv6 %x, want %x", v6, want6)
	}
	if v4, v6 := ownAddrs(nil); v4 != nil || v6 != nil {
		t.Fatalf("no addresses: %v %v", v4, v6)
	}
}
