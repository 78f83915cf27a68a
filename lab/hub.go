package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/swanpath/swanpath/internal/swanpathdconf"
)

// The seed's hub-and-spoke (docs/hub-and-spoke.md, seeds/001): a hub and
// two spokes, each a kernel host on its own WAN subnet behind one WAN
// router, IKEv2 PSK, route-based tunnels with GRE over them and routes
// over the GRE tunnels:
//
//	lan1 ── spoke1 ──┐                    ┌── spoke2 ── lan2
//	10.2.0.10   192.168.2.10 ── wr ── 192.168.3.10   10.3.0.10
//	                        192.168.1.10
//	                            hub
//
// The hub runs swanpathd (its WAN port in DPDK, the route-based interface
// ipsec0 for if_id 20) and charon with the kernel-swanpath plugin, one
// connection per spoke (remote_addrs = %any); each spoke runs libreswan's
// pluto as the seed configures it (VTI ipsec0 with mark 20, vti-shared,
// vti-routing, ESP-in-UDP). The tunnels carry GRE between the 240.0.0.x
// addresses (their traffic selectors); the LANs are routed over GRE, so
// spoke1's LAN reaches spoke2's through the hub.
const (
	Hub = "hub"
	WR  = "wr" // the WAN router between the sites

	HubWanAddr    = "192.168.1.10"
	HubRouterAddr = "192.168.1.1" // wr's address on the hub's link
	HubGREAddr    = "240.0.0.1"   // the hub's GRE endpoint, its traffic selector
	HubID         = "1"           // IKE identity (@1 in the seed)
	HubWan        = "wan"         // the hub's WAN interface (swanpathd's port)
	HubWanTap     = "twan"        // swanpathd's TAP of it
	// RouteIf is the route-based interface on every site: swanpathd's
	// on the hub (if_id RouteID), libreswan's VTI on the spokes (mark
	// RouteID)
	RouteIf = "ipsec0"
	RouteID = 20
	// RouteMTU is RouteIf's MTU everywhere (the seed's fix for lost
	// fragments); the GRE tunnels over it have 24 bytes less
	RouteMTU = 1400
	GREMTU   = RouteMTU - 24
)

// Spoke is one spoke of HubAndSpoke with everything the lab gives it.
type Spoke struct {
	Role    string // its kernel host
	LanHost string // the namespace behind it
	N       int    // 2 or 3: the seed's numbering (ids, addresses)
}

// Spokes of HubAndSpoke.
var Spokes = []Spoke{{Role: "spoke1", LanHost: "lan1", N: 2}, {Role: "spoke2", LanHost: "lan2", N: 3}}

// ID is the spoke's IKE identity (@2, @3 in the seed).
func (s Spoke) ID() string { return fmt.Sprint(s.N) }

// Conn is the spoke's libreswan connection (2to1), HubConn the hub's
// connection (and CHILD_SA) for it (1to2), as the seed names them.
func (s Spoke) Conn() string    { return fmt.Sprintf("%dto1", s.N) }
func (s Spoke) HubConn() string { return fmt.Sprintf("1to%d", s.N) }

// WanAddr is the spoke's WAN address, RouterAddr wr's on its link.
func (s Spoke) WanAddr() string    { return fmt.Sprintf("192.168.%d.10", s.N) }
func (s Spoke) RouterAddr() string { return fmt.Sprintf("192.168.%d.1", s.N) }

// GREAddr is the spoke's GRE endpoint and traffic selector (240.0.0.2).
func (s Spoke) GREAddr() string { return fmt.Sprintf("240.0.0.%d", s.N) }

// GRE is the GRE tunnel between hub and spoke: its name on the hub (the
// spoke's is "gre1"), its /30 (hub .1, spoke .2).
func (s Spoke) GRE() string     { return fmt.Sprintf("gre%d", s.N) }
func (s Spoke) HubTun() string  { return fmt.Sprintf("10.255.%d.1", s.N) }
func (s Spoke) SiteTun() string { return fmt.Sprintf("10.255.%d.2", s.N) }

// LanNet is the LAN behind the spoke, LanAddr the spoke's address there,
// HostAddr its LAN host's.
func (s Spoke) LanNet() string   { return fmt.Sprintf("10.%d.0.0/24", s.N) }
func (s Spoke) LanAddr() string  { return fmt.Sprintf("10.%d.0.1", s.N) }
func (s Spoke) HostAddr() string { return fmt.Sprintf("10.%d.0.10", s.N) }

// SpokeGRE is the spoke's GRE tunnel to the hub.
const SpokeGRE = "gre1"

// HubIKE is the hub's IKE daemon.
type HubIKE int

const (
	// HubStrongSwan: charon with the kernel-swanpath plugin on this
	// machine's root, one connection per spoke, if_id RouteID.
	HubStrongSwan HubIKE = iota
	// HubLibreswan: pluto as the seed's hub (ap1) is configured, mark
	// RouteID with vti-interface RouteIf, on the libreswan root, and
	// swanpathd with the XFRM mirror.
	HubLibreswan
)

func (k HubIKE) String() string {
	if k == HubLibreswan {
		return "libreswan"
	}
	return "strongswan"
}

// HubAndSpoke is the seed's topology (see Hub) as data, for
// Options.Topology; spokeRoot is the spokes' root (LibreswanRoot), which
// a libreswan hub shares. The hub's WAN is left unaddressed for its
// swanpathd (StartHub).
func HubAndSpoke(spokeRoot string, ike HubIKE) Topology {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	hubWan := End{Hub, HubWan}
	hub := HostSpec{Role: Hub, Forward: true, Kind: KindKernel, Root: "/"}
	if ike == HubLibreswan {
		hub.Root, hub.Mem = spokeRoot, UMLGatewayMem
	}
	t := Topology{
		Hosts: []HostSpec{hub, {Role: WR, Forward: true}},
		Links: []Link{{A: hubWan, B: End{WR, "hub"}}},
		Addrs: []Addr{{End{WR, "hub"}, p(HubRouterAddr + "/24")}},
		Routers: []Router{{Role: Hub, Wan: hubWan, WanAddrs: []netip.Prefix{p(HubWanAddr + "/24")},
			Defaults: []netip.Addr{a(HubRouterAddr)}, Deferred: true}},
	}
	for _, s := range Spokes {
		wan, lan, host, wr := End{s.Role, "wan"}, End{s.Role, "lan"}, End{s.LanHost, HostIf}, End{WR, s.Role}
		t.Hosts = append(t.Hosts, HostSpec{Role: s.Role, Forward: true, Kind: KindKernel, Root: spokeRoot, Mem: UMLMem},
			HostSpec{Role: s.LanHost})
		t.Links = append(t.Links, Link{A: wan, B: wr}, Link{A: lan, B: host})
		t.Addrs = append(t.Addrs, Addr{wr, p(s.RouterAddr() + "/24")}, Addr{host, p(s.HostAddr() + "/24")})
		t.Routes = append(t.Routes, Route{Host: s.LanHost, Via: a(s.LanAddr())})
		t.Routers = append(t.Routers, Router{Role: s.Role, Lan: lan, Wan: wan,
			LanAddrs: []netip.Prefix{p(s.LanAddr() + "/24")}, WanAddrs: []netip.Prefix{p(s.WanAddr() + "/24")},
			Defaults: []netip.Addr{a(s.RouterAddr())}})
	}
	return t
}

// IPsecConf is the spoke's ipsec.conf as the seed writes it (its
// comments left out; its pluto log goes to the lab's output instead of
// /var/log/pluto.log), but auto=add: the lab brings the connection up
// with `ipsec auto --up` (StartSpoke), which is what auto=start does when
// pluto starts.
func (s Spoke) IPsecConf() string {
	return seedSetup(fmt.Sprintf("the seed's spoke (ap%d)", s.N)) +
		seedConn(s.Conn(), s.WanAddr(), s.GREAddr(), s.ID(), HubWanAddr, HubGREAddr, HubID)
}

// seedSetup is the config setup section the seed's boxes share, with the
// lab's logging.
func seedSetup(what string) string {
	return fmt.Sprintf(`# generated by swanpath lab: %s
config setup
	virtual_private=%%v4:240.0.0.0/8
	plutodebug=none
	logtime=yes
	dumpdir=/run/pluto
`, what)
}

// seedConn is one of the seed's connections (hub or spoke alike: IKEv2
// PSK, aes256-sha2, aes_gcm128-null, UDP encapsulation, the shared VTI
// with mark RouteID), auto=add, from left to right (%any on the hub).
func seedConn(name, left, leftGRE, leftID, right, rightGRE, rightID string) string {
	return fmt.Sprintf(`
conn %s
	authby=secret
	ike=aes256-sha2
	ikelifetime=86400
	ikev2=insist
	phase2=esp
	phase2alg=aes_gcm128-null
	auto=add
	type=tunnel
	encapsulation=yes
	mark=%d/0xffffffff
	vti-interface=%s
	vti-shared=yes
	vti-routing=yes
	left=%s
	leftsubnet=%s/32
	leftid=@%s
	right=%s
	rightsubnet=%s/32
	rightid=@%s
`, name, RouteID, RouteIf, left, leftGRE, leftID, right, rightGRE, rightID)
}

// IPsecSecrets is the spoke's ipsec.secrets (the lab's PSK).
func (s Spoke) IPsecSecrets() string {
	return fmt.Sprintf("@%s @%s : PSK %q\n", s.ID(), HubID, Tunnel{}.withDefaults().PSK)
}

// HubSwanctlConf is the hub's swanctl.conf: the seed's hub connections
// (1to2, 1to3: remote_addrs %any, the spoke's identity and 240.0.0.x) for
// strongSwan, each CHILD_SA route-based with if_id RouteID. IKE: the
// seed's aes256-sha2 (AES-CBC-256, SHA2-256 PRF and integrity) with the
// DH groups libreswan proposes by default; ESP: aes_gcm128-null is
// aes128gcm16, with DH groups too for a CHILD_SA rekey with PFS
// (libreswan's default).
func HubSwanctlConf() string {
	var b strings.Builder
	b.WriteString("# generated by swanpath lab: the seed's hub for strongSwan\nconnections {\n")
	for _, s := range Spokes {
		fmt.Fprintf(&b, `	%[1]s {
		version = 2
		local_addrs = %[2]s
		remote_addrs = %%any
		proposals = aes256-sha256-ecp256-modp2048-modp3072-modp4096
		encap = yes
		local {
			auth = psk
			id = @%[3]s
		}
		remote {
			auth = psk
			id = @%[4]s
		}
		children {
			%[1]s {
				mode = tunnel
				local_ts = %[5]s/32
				remote_ts = %[6]s/32
				esp_proposals = aes128gcm16-ecp256-modp2048-modp3072-modp4096,aes128gcm16
				if_id_in = %[7]d
				if_id_out = %[7]d
				start_action = none
			}
		}
	}
`, s.HubConn(), HubWanAddr, HubID, s.ID(), HubGREAddr, s.GREAddr(), RouteID)
	}
	b.WriteString("}\nsecrets {\n")
	for _, s := range Spokes {
		fmt.Fprintf(&b, "\tike-%s {\n\t\tid-hub = @%s\n\t\tid-spoke = @%s\n\t\tsecret = %q\n\t}\n", s.HubConn(), HubID, s.ID(), Tunnel{}.withDefaults().PSK)
	}
	b.WriteString("}\n")
	return b.String()
}

// HubIPsecConf is the hub's ipsec.conf as the seed writes it (ap1: one
// connection per spoke, right=%any, the VTI ipsec0 with mark 20 shared
// by both), but auto=add: the spokes initiate. Its pluto log goes to the
// lab's output.
func HubIPsecConf() string {
	var b strings.Builder
	b.WriteString(seedSetup("the seed's hub (ap1)"))
	for _, s := range Spokes {
		b.WriteString(seedConn(s.HubConn(), HubWanAddr, HubGREAddr, HubID, "%any", s.GREAddr(), s.ID()))
	}
	return b.String()
}

// HubIPsecSecrets is the hub's ipsec.secrets: the lab's PSK for each
// spoke.
func HubIPsecSecrets() string {
	var b strings.Builder
	for _, s := range Spokes {
		fmt.Fprintf(&b, "@%s @%s : PSK %q\n", HubID, s.ID(), Tunnel{}.withDefaults().PSK)
	}
	return b.String()
}

// HubSite is the hub of a HubAndSpoke lab, all on the kernel host Hub:
// swanpathd and either charon with the kernel-swanpath plugin or pluto
// (with swanpathd's XFRM mirror).
type HubSite struct {
	IKE    HubIKE
	D      *Swanpathd
	Charon *Charon // HubStrongSwan
	Pluto  *Pluto  // HubLibreswan
}

// HubOptions say how StartHub sets the hub up.
type HubOptions struct {
	IKE HubIKE
	// MSSClamp is [[interface]] mss_clamp of RouteIf: nil for off.
	MSSClamp any
}

// StartHub starts swanpathd on the hub (its WAN port net_af_packet on
// HubWan, TAP HubWanTap with the hub's address; the route-based interface
// RouteIf, MTU RouteMTU: if_id RouteID for charon, mark RouteID for
// pluto), puts the GRE endpoint HubGREAddr on lo, makes a GRE tunnel to
// each spoke over RouteIf with a route to its LAN, and starts the IKE
// daemon: charon with HubSwanctlConf loaded (the lab routes each spoke's
// 240.0.0.x into RouteIf), or pluto with HubIPsecConf (its vti-routing
// does). The spokes initiate.
func (l *Lab) StartHub(ctx context.Context, bin, ctlBin string, o HubOptions) (*HubSite, error) {
	conf := swanpathdconf.Config{
		Ports:      []swanpathdconf.Port{{Name: "wan", Device: "net_af_packet0,iface=" + HubWan, Tap: HubWanTap}},
		Source:     swanpathdconf.Source{Kind: "plugin"},
		Interfaces: []swanpathdconf.Interface{{Name: RouteIf, IfID: RouteID, MTU: RouteMTU, MSSClamp: o.MSSClamp}},
		// every poll of an idle worker is a system call, each costly in
		// user-mode Linux: charon's requests (answered within 5 s or
		// the plugin gives up) need the CPU more than the latency
		Fastpath: swanpathdconf.Fastpath{IdleSleepUS: 1000},
		// charon's names for the SAs (swanpathctl sa)
		Vici: &swanpathdconf.Socket{Socket: kernelCharonDir(Hub) + "/charon.vici"},
	}
	if o.IKE == HubLibreswan {
		// pluto installs SAs and policies with mark 20 in the kernel's
		// XFRM (its VTI's); the mirror brings them to RouteIf
		conf.Source = swanpathdconf.Source{Kind: "xfrm"}
		conf.Interfaces[0].IfID, conf.Interfaces[0].Mark = 0, RouteID
		conf.Vici = nil
	}
	d, err := l.newKernelSwanpathd(Hub, bin, ctlBin, conf, "swanpath lab (hub, "+o.IKE.String()+")")
	if err != nil {
		return nil, err
	}
	h := &HubSite{IKE: o.IKE, D: d}
	t0 := time.Now()
	if err := d.Start(ctx); err != nil {
		return h, err
	}
	l.t.Logf("hub: swanpathd ready in %v", time.Since(t0).Round(time.Millisecond))
	if err := l.configureRouter(Hub, "", HubWanTap); err != nil {
		return h, err
	}
	cmds := []string{
		"ip addr add " + HubGREAddr + "/32 dev lo",
		"ip link set " + RouteIf + " up",
		// the next hop resolved before the spokes' first packets: each
		// change of the kernel's routes or neighbours rebuilds the fast
		// path's FIB, seconds in user-mode Linux, and charon's requests
		// wait for it (the ping itself is dropped: the fast path is
		// closed until charon connects; ARP passes)
		"ping -c 1 -W 2 " + HubRouterAddr + "; ip neigh show " + HubRouterAddr + " | grep -q lladdr",
	}
	for _, s := range Spokes {
		if o.IKE == HubStrongSwan {
			cmds = append(cmds, "ip route add "+s.GREAddr()+"/32 dev "+RouteIf)
		}
		cmds = append(cmds, greCmds(s.GRE(), HubGREAddr, s.GREAddr(), s.HubTun(), s.SiteTun(), s.LanNet())...)
	}
	if err := l.sh(ctx, Hub, cmds); err != nil {
		return h, err
	}
	t1 := time.Now()
	if err := d.waitFIBSettled(ctx); err != nil {
		return h, err
	}
	l.t.Logf("hub: addresses, GRE, FIB settled in %v", time.Since(t1).Round(time.Millisecond))
	t2 := time.Now()
	if o.IKE == HubLibreswan {
		h.Pluto, err = l.StartPlutoConf(ctx, Hub, Spokes[0].HubConn(), HubIPsecConf(), HubIPsecSecrets())
		for _, s := range Spokes[1:] {
			if err == nil {
				_, err = h.Pluto.Ipsec(ctx, "auto", "--add", s.HubConn())
			}
		}
		l.t.Logf("hub: pluto started and its connections added in %v", time.Since(t2).Round(time.Millisecond))
		return h, err
	}
	h.Charon, err = l.StartCharon(Hub, CharonOptions{Plugins: []Plugin{SwanpathPlugin(d)}, Swanctl: HubSwanctlConf()})
	if err != nil {
		return h, err
	}
	err = h.Charon.LoadAll(ctx)
	l.t.Logf("hub: charon started and loaded in %v", time.Since(t2).Round(time.Millisecond))
	return h, err
}

// greCmds make GRE tunnel name from local to remote (outer addresses),
// with MTU GREMTU, address tun/30 (peer at tunPeer) and a route to dst via
// the peer.
func greCmds(name, local, remote, tun, tunPeer, dst string) []string {
	return []string{
		fmt.Sprintf("ip tunnel add %s mode gre local %s remote %s ttl 64", name, local, remote),
		fmt.Sprintf("ip addr add %s/30 dev %s", tun, name),
		fmt.Sprintf("ip link set %s mtu %d up", name, GREMTU),
		fmt.Sprintf("ip route add %s via %s dev %s", dst, tunPeer, name),
	}
}

// sh runs each command with sh -c on host role, stopping at the first
// that fails.
func (l *Lab) sh(ctx context.Context, role string, cmds []string) error {
	h := l.Host(role)
	for _, c := range cmds {
		if out, err := h.Exec(ctx, "sh", "-c", c); err != nil {
			return fmt.Errorf("%s: %s: %w %s", role, c, err, out)
		}
	}
	return nil
}

// StartHubAndSpokes starts the hub (StartHub) and the spokes' plutos at
// at once, then brings the spokes' tunnels up (UpSpoke). The
// plutos are returned in the order of Spokes, nil where one did not
// start.
func (l *Lab) StartHubAndSpokes(ctx context.Context, bin, ctlBin string, o HubOptions) (*HubSite, []*Pluto, error) {
	plutos := make([]*Pluto, len(Spokes))
	errs := make([]error, len(Spokes)+1)
	var hub *HubSite
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		hub, errs[0] = l.StartHub(ctx, bin, ctlBin, o)
	}()
	for i, s := range Spokes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			plutos[i], errs[i+1] = l.StartPlutoConf(ctx, s.Role, s.Conn(), s.IPsecConf(), s.IPsecSecrets())
			l.t.Logf("%s: pluto started in %v", s.Role, time.Since(t0).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return hub, plutos, err
	}
	// one after the other: two CHILD_SAs at once on the hub's one
	// (user-mode Linux) CPU made swanpathd answer charon late
	for i, s := range Spokes {
		if err := l.UpSpoke(ctx, s, plutos[i]); err != nil {
			return hub, plutos, err
		}
	}
	return hub, plutos, nil
}

// UpSpoke brings the connection of spoke s up with its pluto p (`ipsec
// auto --up`: pluto's updown makes the VTI RouteIf, shared, and routes
// the hub's 240.0.0.1 into it), sets the VTI's MTU to RouteMTU (the
// seed's fix), puts the spoke's GRE endpoint on lo and makes the GRE
// tunnel to the hub over the VTI with a route to every other spoke's LAN
// through it.
func (l *Lab) UpSpoke(ctx context.Context, s Spoke, p *Pluto) error {
	t0 := time.Now()
	// up to five tries: on a busy machine, swanpathd in
	// user-mode Linux may answer charon's ADD_SA after the plugin's 5 s,
	// and the hub then refuses the CHILD_SA (the IKE_SA stays)
	var err error
	for try := 1; try <= 5; try++ {
		if err = p.Up(ctx); err == nil {
			break
		}
		l.t.Logf("%s: try %d: %v", s.Role, try, strings.SplitN(err.Error(), "\n", 2)[0])
	}
	if err != nil {
		return err
	}
	l.t.Logf("%s: tunnel up in %v", s.Role, time.Since(t0).Round(time.Millisecond))
	cmds := []string{
		fmt.Sprintf("ip link set %s mtu %d", RouteIf, RouteMTU),
		"ip addr add " + s.GREAddr() + "/32 dev lo",
	}
	gre := greCmds(SpokeGRE, s.GREAddr(), HubGREAddr, s.SiteTun(), s.HubTun(), "")
	cmds = append(cmds, gre[:3]...)
	for _, o := range Spokes {
		if o != s {
			cmds = append(cmds, fmt.Sprintf("ip route add %s via %s dev %s", o.LanNet(), s.HubTun(), SpokeGRE))
		}
	}
	return l.sh(ctx, s.Role, cmds)
}

// waitFIBSettled returns once swanpathd has not rebuilt its FIB (the
// debug log's "FIB updated") for two seconds.
func (d *Swanpathd) waitFIBSettled(ctx context.Context) error {
	last, since := -1, time.Now()
	return PollFor(ctx, "swanpathd's FIB settled", 60*time.Second, 200*time.Millisecond, func() (bool, error) {
		n := strings.Count(d.Output(), `msg="FIB updated"`)
		if n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= 2*time.Second, fmt.Errorf("%d FIB updates so far", n)
	})
}
