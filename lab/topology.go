package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
)

// Topology is a lab described as data: its hosts, the links between them,
// the addresses and routes the lab gives them when it builds, the routers
// whose addressing waits for swanpathd's TAPs, and a NAT router. New builds
// the topology of Options (FromOptions); Validate rejects what cannot be
// built before anything is.
type Topology struct {
	Hosts   []HostSpec
	Links   []Link
	Addrs   []Addr   // put on the links' ends at build
	Routes  []Route  // added at build, after the addresses
	Routers []Router // the IPsec gateways' addressing (see Router)
	NAT     *NAT     // a NAT router, or nil
	// Middlebox is a plain router on the WAN (proxy ARP, no NAT), or nil
	Middlebox *Middlebox
	IPv6      bool // routers forward IPv6 too
}

// HostSpec is one host: a role (its name in the lab), whether it forwards
// IP, and its kind.
type HostSpec struct {
	Role    string
	Forward bool
	Kind    HostKind
	// Root is a kernel host's root file system, a directory of this
	// machine (LibreswanRoot); empty: this machine's / (read-only).
	Root string
	// Mem is a kernel host's memory (mem=); empty: the lab's
	// (Options.KernelMem, UMLMem, or UMLGatewayMem with a Root).
	Mem string
}

// HostKind is what a host is: a network namespace (the default) or a
// user-mode-Linux kernel (UML) on the same veths.
type HostKind string

const (
	KindNS     HostKind = ""
	KindKernel HostKind = "uml"
)

// End is one end of a link: an interface of a host.
type End struct{ Host, If string }

// Link is a point-to-point Ethernet link (a veth pair between namespaces).
type Link struct {
	A, B End
	MTU  int // both ends; 0 keeps the default (1500)
}

// Addr is an address (with its prefix length) on a link's end.
type Addr struct {
	End
	Prefix netip.Prefix
}

// Route is a route on a host: to Dst (the default route when Dst is the
// zero Prefix) via a neighbour.
type Route struct {
	Host string
	Dst  netip.Prefix
	Via  netip.Addr
}

// Router is the addressing of an IPsec gateway (gw, pr): addresses on its
// LAN and WAN interfaces and default routes out of the WAN. A router
// without a LAN (a hub) leaves Lan and LanAddrs empty. The lab puts it
// on the veths Lan and Wan when it builds, unless Deferred: swanpathd takes
// those veths as DPDK ports, and the test puts the addressing on
// swanpathd's TAPs (ConfigureGateway, ConfigurePeer).
type Router struct {
	Role               string
	Lan, Wan           End
	LanAddrs, WanAddrs []netip.Prefix
	Defaults           []netip.Addr // default routes via these, out of the WAN
	Deferred           bool
}

// NAT is a NAT router: it masquerades what leaves interface Out, UDP to
// ports PortLo-PortHi (so its NAT-T port is not 4500).
type NAT struct {
	Host, Out      string
	PortLo, PortHi int
}

// Middlebox is a router in the middle of the WAN, as an access line's
// router: the gateway and the peer keep their addresses in WANNet and
// reach each other through it (proxy ARP and host routes, no NAT). Its
// link to the peer (Far) may have a lower MTU than the gateway's WAN
// (Topology.Links), so that what the gateway sends must be fragmented or
// answered with ICMP "fragmentation needed" there; it may drop a share of
// the IP fragments it forwards (DropFrags, percent), as the seed's ADSL
// path did. Addr is its own address on the gateway's side, the source of
// its ICMP errors.
type Middlebox struct {
	Host, Near, Far string
	Addr            netip.Addr
	DropFrags       int
}

// ErrOptions is wrapped by FromOptions for combinations a lab cannot have.
var ErrOptions = errors.New("lab: options do not go together")

// FromOptions is the topology of opts:
//
//	h1 ── gw ── pr ── h2, or with NAT  h1 ── gw ── nr ── pr ── h2,
//	or with a Middlebox  h1 ── gw ── mb ── pr ── h2
//
// NAT goes with neither IPv6 (the NAT router is IPv4 only) nor
// SwanpathPeer (it expects a kernel-libipsec peer).
func FromOptions(opts Options) (Topology, error) {
	if opts.Topology != nil {
		if opts.NAT || opts.IPv6 || opts.SwanpathPeer || opts.KernelPeer || opts.KernelGatewayRoot != "" || opts.GatewayAddrs {
			return Topology{}, fmt.Errorf("%w: Topology with NAT, IPv6, SwanpathPeer, KernelPeer, KernelGatewayRoot or GatewayAddrs (the topology says it all)", ErrOptions)
		}
		return *opts.Topology, opts.Topology.Validate()
	}
	if opts.KernelPeer && (opts.NAT || opts.SwanpathPeer) {
		return Topology{}, fmt.Errorf("%w: KernelPeer with NAT or SwanpathPeer (the peer is one thing)", ErrOptions)
	}
	if opts.KernelGatewayRoot != "" && (opts.NAT || opts.SwanpathPeer || opts.GatewayAddrs) {
		return Topology{}, fmt.Errorf("%w: KernelGatewayRoot with NAT, SwanpathPeer or GatewayAddrs", ErrOptions)
	}
	if opts.NAT && (opts.IPv6 || opts.SwanpathPeer) {
		return Topology{}, fmt.Errorf("%w: NAT with IPv6 or SwanpathPeer (the NAT router is IPv4 only and expects a kernel-libipsec peer)", ErrOptions)
	}
	if opts.Middlebox != nil && (opts.NAT || opts.IPv6) {
		return Topology{}, fmt.Errorf("%w: Middlebox with NAT or IPv6 (the middlebox is an IPv4 router in place of the NAT router)", ErrOptions)
	}
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	t := Topology{IPv6: opts.IPv6}
	t.Hosts = []HostSpec{{Role: H1}, {Role: GW, Forward: true}, {Role: PR, Forward: true}, {Role: H2}}
	if opts.KernelPeer {
		t.Hosts[2].Kind = KindKernel
	}
	if opts.KernelGatewayRoot != "" {
		t.Hosts[1].Kind, t.Hosts[1].Root = KindKernel, opts.KernelGatewayRoot
	}
	gwLan, gwWan := End{GW, GWLan}, End{GW, GWWan}
	prLan, prWan := End{PR, PRLan}, End{PR, PRWan}
	h1, h2 := End{H1, HostIf}, End{H2, HostIf}
	t.Links = []Link{{A: gwLan, B: h1}, {A: gwWan, B: prWan}, {A: prLan, B: h2}}
	t.Addrs = []Addr{{h1, p(H1Addr + "/24")}, {h2, p(H2Addr + "/24")}}
	t.Routes = []Route{{Host: H1, Via: a(GWLanAddr)}, {Host: H2, Via: a(PRLanAddr)}}
	gw := Router{Role: GW, Lan: gwLan, Wan: gwWan, Deferred: !opts.GatewayAddrs,
		LanAddrs: []netip.Prefix{p(GWLanAddr + "/24")}, WanAddrs: []netip.Prefix{p(GWWanAddr + "/24")},
		// as on every real gateway, a default route out of the WAN (to
		// the peer or the NAT router in front of it, both at PRWanAddr):
		// a packet no policy takes leaves there in clear, which a
		// gateway with only its connected networks would hide
		Defaults: []netip.Addr{a(PRWanAddr)}}
	pr := Router{Role: PR, Lan: prLan, Wan: prWan, Deferred: opts.SwanpathPeer,
		LanAddrs: []netip.Prefix{p(PRLanAddr + "/24")}, WanAddrs: []netip.Prefix{p(PRWanAddr + "/24")}}
	if opts.IPv6 {
		t.Addrs = append(t.Addrs, Addr{h1, p(H1Addr6 + "/64")}, Addr{h2, p(H2Addr6 + "/64")})
		t.Routes = append(t.Routes, Route{Host: H1, Via: a(GWLanAddr6)}, Route{Host: H2, Via: a(PRLanAddr6)})
		gw.LanAddrs = append(gw.LanAddrs, p(GWLanAddr6+"/64"))
		gw.WanAddrs = append(gw.WanAddrs, p(GWWanAddr6+"/64"))
		gw.Defaults = append(gw.Defaults, a(PRWanAddr6))
		pr.LanAddrs = append(pr.LanAddrs, p(PRLanAddr6+"/64"))
		pr.WanAddrs = append(pr.WanAddrs, p(PRWanAddr6+"/64"))
	}
	if opts.NAT {
		// the peer behind the NAT router: the gateway sees it as
		// PRWanAddr (the router's outside address) and odd ports
		t.Hosts = []HostSpec{{Role: H1}, {Role: GW, Forward: true}, {Role: NR, Forward: true}, {Role: PR, Forward: true}, {Role: H2}}
		t.Links = []Link{{A: gwLan, B: h1}, {A: gwWan, B: End{NR, "wan"}}, {A: End{NR, "lan"}, B: prWan}, {A: prLan, B: h2}}
		t.Addrs = append(t.Addrs, Addr{End{NR, "wan"}, p(PRWanAddr + "/24")}, Addr{End{NR, "lan"}, p(NRInsideAddr + "/24")})
		pr.WanAddrs = []netip.Prefix{p(PRNatAddr + "/24")}
		pr.Defaults = []netip.Addr{a(NRInsideAddr)}
		t.NAT = &NAT{Host: NR, Out: "wan", PortLo: 20000, PortHi: 29999}
	}
	if mo := opts.Middlebox; mo != nil {
		// gw and pr as they are, mb on the WAN between them, answering
		// ARP for each to the other
		mb := &Middlebox{Host: MB, Near: "near", Far: "far", Addr: a(MBAddr), DropFrags: mo.DropFrags}
		t.Hosts = []HostSpec{t.Hosts[0], t.Hosts[1], {Role: MB, Forward: true}, t.Hosts[2], t.Hosts[3]}
		t.Links = []Link{{A: gwLan, B: h1}, {A: gwWan, B: End{MB, mb.Near}}, {A: End{MB, mb.Far}, B: prWan, MTU: mo.FarMTU}, {A: prLan, B: h2}}
		t.Addrs = append(t.Addrs, Addr{End{MB, mb.Near}, p(MBAddr + "/24")})
		t.Middlebox = mb
	}
	t.Routers = []Router{pr, gw}
	return t, t.Validate()
}

var roleName = regexp.MustCompile(`^[a-z0-9]+$`)

// Validate reports every problem of t at once: unknown or duplicate hosts,
// interfaces used twice or not on any link, bad MTUs, routers and routes
// on hosts that do not forward or do not exist.
func (t Topology) Validate() error {
	var errs []error
	hosts := map[string]HostSpec{}
	for _, h := range t.Hosts {
		if !roleName.MatchString(h.Role) {
			errs = append(errs, fmt.Errorf("host %q: a role is lower-case letters and digits", h.Role))
		}
		if h.Kind != KindNS && h.Kind != KindKernel {
			errs = append(errs, fmt.Errorf("host %q: unknown kind %q", h.Role, h.Kind))
		}
		if _, dup := hosts[h.Role]; dup {
			errs = append(errs, fmt.Errorf("host %q: twice", h.Role))
		}
		hosts[h.Role] = h
	}
	ends := map[End]bool{}
	for _, l := range t.Links {
		for _, e := range []End{l.A, l.B} {
			switch _, ok := hosts[e.Host]; {
			case !ok:
				errs = append(errs, fmt.Errorf("link %s: no host %q", e, e.Host))
			case e.If == "" || len(e.If) > 15:
				errs = append(errs, fmt.Errorf("link %s: interface name of 1 to 15 characters", e))
			case ends[e]:
				errs = append(errs, fmt.Errorf("link %s: interface on two links", e))
			}
			ends[e] = true
		}
		if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
			errs = append(errs, fmt.Errorf("link %s - %s: MTU %d out of range 68..65535", l.A, l.B, l.MTU))
		}
	}
	for _, a := range t.Addrs {
		if !ends[a.End] {
			errs = append(errs, fmt.Errorf("address %s on %s: no such link end", a.Prefix, a.End))
		}
	}
	for _, r := range t.Routes {
		if _, ok := hosts[r.Host]; !ok || !r.Via.IsValid() {
			errs = append(errs, fmt.Errorf("route on %q via %s: no such host or no neighbour", r.Host, r.Via))
		}
	}
	for _, r := range t.Routers {
		if !hosts[r.Role].Forward {
			errs = append(errs, fmt.Errorf("router %q: no such host, or it does not forward", r.Role))
		}
		noLan := r.Lan == (End{}) && len(r.LanAddrs) == 0
		if (!noLan && (r.Lan.Host != r.Role || !ends[r.Lan])) || r.Wan.Host != r.Role || !ends[r.Wan] {
			errs = append(errs, fmt.Errorf("router %q: lan %s and wan %s must be its own link ends", r.Role, r.Lan, r.Wan))
		}
		if len(r.WanAddrs) == 0 {
			errs = append(errs, fmt.Errorf("router %q: no WAN address", r.Role))
		}
	}
	if n := t.NAT; n != nil && (!hosts[n.Host].Forward || !ends[End{n.Host, n.Out}] || n.PortLo <= 0 || n.PortLo > n.PortHi || n.PortHi > 65535) {
		errs = append(errs, fmt.Errorf("NAT on %q out of %q, ports %d-%d: no such forwarding host and link end, or bad ports", n.Host, n.Out, n.PortLo, n.PortHi))
	}
	if m := t.Middlebox; m != nil && (!hosts[m.Host].Forward || !ends[End{m.Host, m.Near}] || !ends[End{m.Host, m.Far}] ||
		!m.Addr.Is4() || m.DropFrags < 0 || m.DropFrags > 100) {
		errs = append(errs, fmt.Errorf("middlebox on %q between %q and %q at %s dropping %d%% of fragments: no such forwarding host and link ends, no IPv4 address or a share out of 0..100",
			m.Host, m.Near, m.Far, m.Addr, m.DropFrags))
	}
	return errors.Join(errs...)
}

func (e End) String() string { return e.Host + ":" + e.If }

// router is the Router of role, if any.
func (t Topology) router(role string) (Router, bool) {
	for _, r := range t.Routers {
		if r.Role == role {
			return r, true
		}
	}
	return Router{}, false
}

func (t Topology) roles() []string {
	roles := make([]string, len(t.Hosts))
	for i, h := range t.Hosts {
		roles[i] = h.Role
	}
	return roles
}
