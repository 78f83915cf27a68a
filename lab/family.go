package lab

import "fmt"

// Family picks IPv4, IPv6 or both for the outer addresses or the traffic
// selectors of a Tunnel.
type Family int

const (
	FamilyV4   Family = iota // IPv4 only, the zero value
	FamilyV6                 // IPv6 only
	FamilyDual               // IPv4 and IPv6 (traffic selectors only)
)

func (f Family) String() string {
	switch f {
	case FamilyV4:
		return "v4"
	case FamilyV6:
		return "v6"
	case FamilyDual:
		return "dual"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// check says whether the tunnel can be built in a lab with (ipv6) or
// without IPv6 addresses.
func (t Tunnel) check(ipv6 bool) error {
	switch {
	case t.Outer != FamilyV4 && t.Outer != FamilyV6:
		return fmt.Errorf("tunnel: outer family %s, want v4 or v6", t.Outer)
	case t.Inner != FamilyV4 && t.Inner != FamilyV6 && t.Inner != FamilyDual:
		return fmt.Errorf("tunnel: inner family %s, want v4, v6 or dual", t.Inner)
	case !ipv6 && (t.Outer != FamilyV4 || t.Inner != FamilyV4 && !t.Transport):
		return fmt.Errorf("tunnel: outer %s, inner %s need a lab with Options.IPv6", t.Outer, t.Inner)
	}
	return nil
}

// endpoints are the gateway's and the peer's outer addresses (the peer's
// as the gateway sees it).
func (t Tunnel) endpoints() (gw, pr string) {
	if t.Outer == FamilyV6 {
		return GWWanAddr6, PRWanAddr6
	}
	return GWWanAddr, PRWanAddr
}

// selectors are the traffic selectors behind the gateway and the peer.
func (t Tunnel) selectors() (left, right string) {
	switch t.Inner {
	case FamilyV6:
		return LeftNet6, RightNet6
	case FamilyDual:
		return LeftNet + "," + LeftNet6, RightNet + "," + RightNet6
	}
	return LeftNet, RightNet
}

// PeerConf is the swanctl.conf of the peer in this lab: for kernel-libipsec
// (Tunnel.PeerConf) or, with Options.SwanpathPeer, for a swanpath gateway
// (Tunnel.SwanpathPeerConf); behind the NAT router the peer's own address is
// its inside one.
func (l *Lab) PeerConf(tun Tunnel) string {
	if tun.PeerLocal == "" && tun.Outer == FamilyV4 {
		tun.PeerLocal = l.PeerAddr()
	}
	if l.SwanpathPeer() || l.KernelPeer() {
		// both follow tun.Encap (kernel-libipsec always encapsulates)
		return tun.SwanpathPeerConf()
	}
	return tun.PeerConf()
}
