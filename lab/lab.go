// Package lab builds the end-to-end test topology: four network namespaces
// joined by veths, real daemons (charon, tcpdump, iperf3) started inside them,
// and helpers to drive traffic and read captures.
//
//	h1 (10.1.0.10) ── gw ──── WAN 192.0.2.0/24 ──── pr ── h2 (10.2.0.10)
//	         eth0 ─ lan  wan ─────────────────── wan  lan ─ eth0
//
// The gateway's veth ends `lan` and `wan` are left without addresses, because
// in the real tests swanpathd takes them as DPDK ports and puts the gateway's
// addresses on its TAP interfaces (ConfigureGateway). Options.GatewayAddrs puts
// them straight on the veths instead (the lab's self-test). With
// Options.SwanpathPeer the peer is a swanpath gateway too and its veths are
// left alone the same way (ConfigurePeer).
//
// Options.IPv6 gives every link an IPv6 ULA /64 as well (the *Addr6 and
// *Net6 constants): the same host numbers, fd00:1::/64 behind the gateway,
// fd00:192::/64 on the WAN, fd00:2::/64 behind the peer.
//
// Every namespace, process and file a lab makes is removed by its t.Cleanup,
// also when the test fails or panics; SIGINT/SIGTERM to the test binary runs
// the same cleanup before exiting, and RemoveStale (called by New) removes
// what an earlier, killed, test binary left behind.
//
// A swanpath gateway test looks like:
//
//	l := lab.New(t, lab.Options{})                  // gw veths unaddressed
//	d, _ := l.NS(lab.GW).Start("swanpathd", ...)     // takes lan/wan, makes tlan/twan
//	// poll until tlan/twan exist, then:
//	l.ConfigureGateway("tlan", "twan")
//	tun := lab.Tunnel{ESPProposals: "aes256gcm16", Encap: true}
//	gw, _ := l.StartCharon(lab.GW, lab.CharonOptions{
//		Plugins:  []lab.Plugin{{Name: "kernel-swanpath", Settings: []string{"socket = /run/swanpath/charon.sock"}}},
//		RunBinds: []string{"/run/swanpath"},       // charon gets a private /run
//		Swanctl:  tun.GatewayConf(),
//	})
//	gw.LoadAll(ctx)
//	pr, _ := l.StartPeer(ctx, tun)                   // charon + kernel-libipsec in pr
//	wan, _ := l.Capture(lab.GW, lab.GWWan, "ip")
//	gw.Initiate(ctx, lab.ChildName)
//	gw.WaitEstablished(ctx, lab.ChildName)
//	l.Ping(ctx, lab.H1, lab.H2Addr, 5)
//	l.Iperf3(ctx, lab.H2, lab.H2Addr, lab.H1, 3, false)
//	pkts, _ := wan.Stop()
//	lab.CheckWAN(pkts)
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swanpath/swanpath/internal/swanpathdconf"
)

// Namespace roles, passed to (*Lab).NS.
const (
	H1 = "h1" // LAN host behind the gateway
	GW = "gw" // the gateway (swanpathd + charon in the real tests)
	PR = "pr" // the IPsec peer (charon + kernel-libipsec)
	H2 = "h2" // host behind the peer
	NR = "nr" // NAT router between gateway and peer (Options.NAT)
	MB = "mb" // router in the middle of the WAN (Options.Middlebox)
)

// Addresses of the topology. Nothing outside these ranges is ever used.
const (
	H1Addr    = "10.1.0.10"
	GWLanAddr = "10.1.0.1"
	GWWanAddr = "192.0.2.1"
	PRWanAddr = "192.0.2.2"
	// With Options.NAT the peer sits behind the NAT router: the gateway
	// sees it as PRWanAddr (the router's outside address) and odd ports.
	PRNatAddr    = "198.51.100.2"
	NRInsideAddr = "198.51.100.1"
	PRLanAddr    = "10.2.0.1"
	H2Addr       = "10.2.0.10"
	// With Options.Middlebox, the middlebox's address on the gateway's
	// side: its ICMP errors come from there.
	MBAddr = "192.0.2.3"

	LeftNet  = "10.1.0.0/24" // behind the gateway
	RightNet = "10.2.0.0/24" // behind the peer
	WANNet   = "192.0.2.0/24"
)

// IPv6 addresses of the topology (Options.IPv6), unique local addresses
// only (RFC 4193), one /64 per link. They carry no DAD (nodad), so they are
// usable as soon as the lab is built.
const (
	H1Addr6    = "fd00:1::10"
	GWLanAddr6 = "fd00:1::1"
	GWWanAddr6 = "fd00:192::1"
	PRWanAddr6 = "fd00:192::2"
	PRLanAddr6 = "fd00:2::1"
	H2Addr6    = "fd00:2::10"

	LeftNet6  = "fd00:1::/64" // behind the gateway
	RightNet6 = "fd00:2::/64" // behind the peer
	WANNet6   = "fd00:192::/64"
)

// Interface names inside the namespaces.
const (
	GWLan  = "lan"  // gw's veth towards h1
	GWWan  = "wan"  // gw's veth towards pr
	PRWan  = "wan"  // pr's veth towards gw
	PRLan  = "lan"  // pr's veth towards h2
	HostIf = "eth0" // h1's and h2's veth
)

// Options shape a lab.
type Options struct {
	// GatewayAddrs puts 10.1.0.1/24 and 192.0.2.1/24 on the gateway's veths
	// (lan, wan) right away. Leave it false when swanpathd takes the veths
	// and call ConfigureGateway on its TAP interfaces later.
	GatewayAddrs bool
	// NAT puts a NAT router (nftables masquerade to ports 20000-29999)
	// between the WAN and the peer, so the peer's NAT-T port is not 4500.
	NAT bool
	// IPv6 adds the IPv6 addresses (H1Addr6 ... H2Addr6) to every link,
	// IPv6 default routes to h1 and h2 and IPv6 forwarding to gw and pr,
	// next to the IPv4 ones. Like IPv4, gw and pr get no route to the LAN
	// behind the other: only a tunnel joins the two LANs. Not with NAT.
	IPv6 bool
	// SwanpathPeer makes the peer (pr) a second swanpath gateway: its
	// veths (lan, wan) stay unaddressed for its own swanpathd, and
	// StartSwanpathGateway starts swanpathd and charon with the
	// kernel-swanpath plugin there instead of kernel-libipsec. Not with NAT.
	SwanpathPeer bool
	// KernelPeer makes the peer (pr) a kernel host: a user-mode-Linux
	// instance (UML) on pr's veths, whose charon (StartPeer) uses
	// kernel-netlink, so the kernel's own ESP is the peer: plain ESP or
	// ESP-in-UDP as Tunnel.Encap says, transport mode, every suite the
	// 6.1 kernel has. Not with NAT or SwanpathPeer. Tests skip where
	// user-mode-linux is not installed.
	KernelPeer bool
	// KernelMem is each kernel host's memory (mem=), UMLMem by default.
	KernelMem string
	// KernelGatewayRoot makes the gateway (gw) a kernel host whose root
	// is this directory (LibreswanRoot: Debian's libreswan and the DPDK
	// runtime) instead of this machine's /, which it reaches read-only
	// under /run/host (UML.HostPath). Its veths stay unaddressed for its
	// swanpathd (StartXFRMGateway). "/" is this machine's root itself
	// (charon, swanpathd's DPDK runtime: StartXFRMCharonGateway), still
	// with the gateway's memory. Not with NAT, SwanpathPeer or
	// GatewayAddrs.
	KernelGatewayRoot string
	// ReconcileGrace is swanpathd's charon.reconcile_grace (e.g. "10s",
	// "0"); "" keeps swanpathd's default.
	ReconcileGrace string
	// MetricsListen is swanpathd's metrics.listen (inside its namespace:
	// reach it with Host(GW).Dial); "" leaves the metrics off.
	MetricsListen string
	// Middlebox puts a router (MB) between the gateway's WAN and the
	// peer, as an access line's router; gateway and peer keep their
	// addresses (it answers ARP for each to the other). Not with NAT or
	// IPv6.
	Middlebox *MiddleboxOptions
	// GatewayWANPcap makes the gateway swanpathd's WAN port net_pcap
	// (libpcap on the veth) instead of net_af_packet. DPDK 22.11's
	// af_packet PMD joins a fanout group with PACKET_FANOUT_FLAG_DEFRAG,
	// so the kernel reassembles IPv4 fragments before the fast path sees
	// them; through net_pcap they reach the fast path's own reassembly,
	// as from a real NIC.
	GatewayWANPcap bool
	// GatewayInterfaces are the route-based interfaces ([[interface]]) of
	// the gateway's swanpathd.
	GatewayInterfaces []swanpathdconf.Interface
	// Topology, when set, is built instead of the gw-pr topology of the
	// options above (e.g. HubAndSpoke); none of NAT, IPv6, SwanpathPeer,
	// KernelPeer, KernelGatewayRoot and GatewayAddrs goes with it.
	Topology *Topology
}

// MiddleboxOptions shape the middlebox (Options.Middlebox).
type MiddleboxOptions struct {
	// FarMTU is the MTU of its link to the peer (e.g. 1400); 0 keeps
	// 1500. Larger packets are fragmented there, or answered with ICMP
	// "fragmentation needed" (from MBAddr) when DF is set.
	FarMTU int
	// DropFrags is the share (percent, 0..100) of the IPv4 fragments it
	// forwards, either way, that it drops at random (nftables numgen).
	DropFrags int
}

// Lab is one instance of a topology.
type Lab struct {
	t      testing.TB
	prefix string // e.g. "sp1a2b3c"; namespaces are prefix-role
	topo   Topology
	dir    string // per-test working dir for configs, logs, captures
	// kernelMem is mem= of each kernel host
	kernelMem string
	// reconcileGrace is Options.ReconcileGrace
	reconcileGrace string
	// metricsListen is Options.MetricsListen
	metricsListen string
	// gwInterfaces is Options.GatewayInterfaces
	gwInterfaces []swanpathdconf.Interface
	// gwWANPcap is Options.GatewayWANPcap
	gwWANPcap bool

	procs procSet // every process started on a host, for teardown
	mu    struct {
		sync.Mutex
		hosts   map[string]Host
		charons []*Charon
	}
	closeOnce sync.Once
	downOnce  sync.Once
	downErr   error
}

// New builds the topology of opts (FromOptions) and registers its removal
// with t.Cleanup. It skips the test when not run as root or with -short.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("lab: skipped with -short (needs root and network namespaces)")
	}
	if os.Geteuid() != 0 {
		t.Skip("lab: needs root (network namespaces, veths, charon)")
	}
	for _, bin := range []string{"ip", "unshare"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("lab: %s not found: %v", bin, err)
		}
	}
	topo, err := FromOptions(opts)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	for _, h := range topo.Hosts {
		if h.Kind == KindKernel {
			if why := UMLAvailable(); why != "" {
				t.Skipf("lab: kernel host %s: %s", h.Role, why)
			}
		}
	}
	if err := RemoveStale(); err != nil {
		t.Logf("lab: removing stale namespaces: %v", err)
	}
	installSignalHandler()

	l := &Lab{t: t, prefix: newPrefix(), dir: t.TempDir(), topo: topo, kernelMem: opts.KernelMem,
		reconcileGrace: opts.ReconcileGrace, metricsListen: opts.MetricsListen, gwInterfaces: opts.GatewayInterfaces,
		gwWANPcap: opts.GatewayWANPcap}
	if l.kernelMem == "" {
		l.kernelMem = UMLMem
	}
	l.mu.hosts = map[string]Host{}
	if err := writeMarker(l.prefix); err != nil {
		t.Fatalf("lab: %v", err)
	}
	register(l)
	t.Cleanup(l.Close)

	if err := l.build(); err != nil {
		t.Fatalf("lab %s: build topology: %v", l.prefix, err)
	}
	return l
}

func newPrefix() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return namePrefix + hex.EncodeToString(b)
}

// Prefix is the lab's unique name prefix; namespaces are Prefix()+"-"+role.
func (l *Lab) Prefix() string { return l.prefix }

// Dir is the lab's working directory (configs, logs, captures).
func (l *Lab) Dir() string { return l.dir }

// Topology is what the lab was built from.
func (l *Lab) Topology() Topology { return l.topo }

// Host returns the host of a role (H1, GW, PR, H2, NR), nil if the lab has
// none.
func (l *Lab) Host(role string) Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.hosts[role]
}

// NS returns the namespace host of a role (H1, GW, PR, H2, NR), nil if the
// lab has none or it is no namespace.
func (l *Lab) NS(role string) *NS {
	n, _ := l.Host(role).(*NS)
	return n
}

// NAT says whether the peer is behind the NAT router.
func (l *Lab) NAT() bool { return l.topo.NAT != nil }

// IPv6 says whether the links carry IPv6 addresses too (Options.IPv6).
func (l *Lab) IPv6() bool { return l.topo.IPv6 }

// SwanpathPeer says whether the peer is a swanpath gateway too
// (Options.SwanpathPeer): its addressing waits for its swanpathd's TAPs.
func (l *Lab) SwanpathPeer() bool {
	r, _ := l.topo.router(PR)
	return r.Deferred
}

// build creates the hosts and links of the topology, then gives them
// their addresses, routes, forwarding, routers' addressing (unless
// deferred) and NAT rules.
func (l *Lab) build() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, h := range l.topo.Hosts {
		n, err := createNS(ctx, l.prefix+"-"+h.Role, &l.procs)
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.mu.hosts[h.Role] = n
		l.mu.Unlock()
		if h.Kind == KindKernel {
			// the kernel host's shell: its veths carry the
			// instance's frames only
			for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
				if err := n.Sysctl(ctx, k, "1"); err != nil {
					return err
				}
			}
		}
	}
	for _, lk := range l.topo.Links {
		if err := l.link(ctx, lk); err != nil {
			return err
		}
	}
	if err := l.bootKernels(); err != nil {
		return err
	}
	// the kernel hosts' boot has its own time (tens of seconds on a busy
	// machine); the rest gets its own
	cancel()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// a kernel host's own interface on a link of another MTU: the
	// same MTU inside (the veth of its shell alone would drop its frames)
	for _, lk := range l.topo.Links {
		for _, e := range []End{lk.A, lk.B} {
			if _, ok := l.Host(e.Host).(*UML); ok && lk.MTU > 0 {
				if _, err := l.Host(e.Host).Exec(ctx, "ip", "link", "set", e.If, "mtu", strconv.Itoa(lk.MTU)); err != nil {
					return err
				}
			}
		}
	}
	for _, a := range l.topo.Addrs {
		if _, err := l.Host(a.Host).Exec(ctx, addrArgs("add", a.Prefix, a.If)...); err != nil {
			return err
		}
	}
	for _, r := range l.topo.Routes {
		if _, err := l.Host(r.Host).Exec(ctx, routeArgs("add", r.Dst, r.Via, "")...); err != nil {
			return err
		}
	}
	for _, h := range l.topo.Hosts {
		if h.Forward {
			if err := l.forwarding(ctx, l.Host(h.Role)); err != nil {
				return err
			}
		}
	}
	for _, r := range l.topo.Routers {
		if !r.Deferred {
			if err := l.configureRouter(r.Role, r.Lan.If, r.Wan.If); err != nil {
				return err
			}
		}
	}
	if n := l.topo.NAT; n != nil {
		return l.natRules(ctx, n.PortLo, n.PortHi)
	}
	if m := l.topo.Middlebox; m != nil {
		return l.middlebox(ctx, m)
	}
	return nil
}

// bootKernels starts the kernel hosts, all at once, each on the veths of
// its shell (created by link), and puts them in place of their shells.
func (l *Lab) bootKernels() error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, h := range l.topo.Hosts {
		if h.Kind != KindKernel {
			continue
		}
		var ifaces []string
		for _, lk := range l.topo.Links {
			for _, e := range []End{lk.A, lk.B} {
				if e.Host == h.Role {
					ifaces = append(ifaces, e.If)
				}
			}
		}
		shell := l.NS(h.Role)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			mem := l.kernelMem
			if h.Root != "" && mem == UMLMem {
				mem = UMLGatewayMem // swanpathd's DPDK memory without hugepages
			}
			if h.Mem != "" {
				mem = h.Mem
			}
			u, err := bootUML(ctx, shell, filepath.Join(l.dir, "kernel-"+h.Role), ifaces, mem, h.Root)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			l.t.Logf("lab: kernel host %s booted in %v (mem=%s)", u, u.BootTime().Round(time.Millisecond), mem)
			l.mu.Lock()
			l.mu.hosts[h.Role] = u
			l.mu.Unlock()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// KernelPeer says whether the peer is a kernel host (Options.KernelPeer).
func (l *Lab) KernelPeer() bool {
	_, ok := l.Host(PR).(*UML)
	return ok
}

// link creates lk between two namespace hosts, brings both ends up with
// its MTU and switches TX checksum offload off on them.
func (l *Lab) link(ctx context.Context, lk Link) error {
	a, b := l.NS(lk.A.Host), l.NS(lk.B.Host)
	if a == nil || b == nil {
		return fmt.Errorf("link %s - %s: both ends must be namespace hosts", lk.A, lk.B)
	}
	// veths are created directly inside the namespaces: no names in the
	// root namespace, so concurrent labs never collide.
	if err := run(ctx, "ip", "-n", a.Name, "link", "add", lk.A.If, "type", "veth",
		"peer", "name", lk.B.If, "netns", b.Name); err != nil {
		return err
	}
	for _, e := range []End{lk.A, lk.B} {
		h := l.Host(e.Host)
		if lk.MTU > 0 {
			if _, err := h.Exec(ctx, "ip", "link", "set", e.If, "mtu", strconv.Itoa(lk.MTU)); err != nil {
				return err
			}
		}
		if _, err := h.Exec(ctx, "ip", "link", "set", e.If, "up"); err != nil {
			return err
		}
		// A veth leaves TCP/UDP checksums to "hardware" that is not
		// there. A frame that AF_PACKET hands to DPDK (and DPDK on to a
		// TAP or into a tunnel) keeps the unfinished checksum and is
		// dropped at its destination. Real NICs finish checksums on the
		// wire; here the senders must do it themselves.
		if _, err := h.Exec(ctx, "ethtool", "-K", e.If, "tx", "off"); err != nil {
			return err
		}
	}
	return nil
}

// addrArgs is `ip addr <verb> prefix dev ifname`, IPv6 without DAD (so the
// address is usable at once).
func addrArgs(verb string, p netip.Prefix, ifname string) []string {
	args := []string{"ip", "addr", verb, p.String(), "dev", ifname}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}

// routeArgs is `ip [-6] route <verb> dst via via [dev dev]`, the default
// route when dst is the zero Prefix.
func routeArgs(verb string, dst netip.Prefix, via netip.Addr, dev string) []string {
	args := []string{"ip"}
	if via.Is6() {
		args = append(args, "-6")
	}
	to := "default"
	if dst.IsValid() {
		to = dst.String()
	}
	args = append(args, "route", verb, to, "via", via.String())
	if dev != "" {
		args = append(args, "dev", dev)
	}
	return args
}

// forwarding switches IP forwarding on in h (IPv6 too with Options.IPv6).
func (l *Lab) forwarding(ctx context.Context, h Host) error {
	if err := h.Sysctl(ctx, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if l.topo.IPv6 {
		return h.Sysctl(ctx, "net.ipv6.conf.all.forwarding", "1")
	}
	return nil
}

// PeerAddr is the peer's own WAN address (behind the NAT with Options.NAT).
func (l *Lab) PeerAddr() string {
	r, _ := l.topo.router(PR)
	return r.WanAddrs[0].Addr().String()
}

// natRules makes the NAT router masquerade what leaves its outside
// interface, UDP to ports lo-hi.
func (l *Lab) natRules(ctx context.Context, lo, hi int) error {
	n := l.topo.NAT
	rules := fmt.Sprintf(`flush ruleset
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %q ip protocol udp masquerade to :%d-%d
		oifname %q masquerade
	}
}
`, n.Out, lo, hi, n.Out)
	path := filepath.Join(l.dir, fmt.Sprintf("nat-%d-%d.nft", lo, hi))
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		return fmt.Errorf("nat router: %w", err)
	}
	if _, err := l.Host(n.Host).Exec(ctx, "nft", "-f", path); err != nil {
		return fmt.Errorf("nat router: %w", err)
	}
	return nil
}

// RemapNAT makes the NAT router forget its mappings and map the peer to
// ports lo-hi from now on, as a NAT box that reboots or times out does.
func (l *Lab) RemapNAT(ctx context.Context, lo, hi int) error {
	if l.topo.NAT == nil {
		return errors.New("remap NAT: the lab has no NAT router")
	}
	if err := l.natRules(ctx, lo, hi); err != nil {
		return err
	}
	nr := l.NS(l.topo.NAT.Host)
	if nr == nil {
		return errors.New("remap NAT: the NAT router is no namespace host")
	}
	if err := nr.flushConntrack(); err != nil {
		return fmt.Errorf("remap NAT: %w", err)
	}
	return nil
}

// ConfigureGateway puts the gateway's addresses on lanIf (10.1.0.1/24) and
// wanIf (192.0.2.1/24) in the gw namespace, with Options.IPv6 also
// fd00:1::1/64 and fd00:192::1/64, brings them up, switches forwarding
// on and adds a default route via PRWanAddr (PRWanAddr6) out of wanIf.
// With swanpathd these are its TAP interfaces, called after swanpathd
// created them. Routes: both networks are connected; 10.2.0.0/24 (and
// fd00:2::/64) is reached by IPsec policy, or else by the default route.
func (l *Lab) ConfigureGateway(lanIf, wanIf string) error {
	return l.configureRouter(GW, lanIf, wanIf)
}

// ConfigurePeer is ConfigureGateway for the peer (pr): 10.2.0.1/24 on lanIf,
// its WAN address (Lab.PeerAddr)/24 on wanIf, with Options.IPv6 also
// fd00:2::1/64 and fd00:192::2/64, and behind the NAT router a default
// route to it. The lab calls it on pr's veths unless Options.SwanpathPeer;
// then StartSwanpathGateway calls it on the TAPs of pr's swanpathd.
func (l *Lab) ConfigurePeer(lanIf, wanIf string) error {
	return l.configureRouter(PR, lanIf, wanIf)
}

// configureRouter puts the Router of role on lanIf and wanIf: both up,
// its addresses, forwarding, its default routes out of wanIf. lanIf is ""
// for a router without a LAN.
func (l *Lab) configureRouter(role, lanIf, wanIf string) error {
	r, ok := l.topo.router(role)
	h := l.Host(role)
	if !ok || h == nil {
		return fmt.Errorf("configure %s: no such router", role)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmds := [][]string{{"ip", "link", "set", wanIf, "up"}}
	if lanIf != "" {
		cmds = append(cmds, []string{"ip", "link", "set", lanIf, "up"})
	}
	for _, a := range []struct {
		ps []netip.Prefix
		on string
	}{{r.LanAddrs, lanIf}, {r.WanAddrs, wanIf}} {
		for _, p := range a.ps {
			cmds = append(cmds, addrArgs("replace", p, a.on))
		}
	}
	for _, c := range cmds {
		if _, err := h.Exec(ctx, c...); err != nil {
			return fmt.Errorf("configure %s: %w", role, err)
		}
	}
	if err := l.forwarding(ctx, h); err != nil {
		return fmt.Errorf("configure %s: %w", role, err)
	}
	for _, via := range r.Defaults {
		if _, err := h.Exec(ctx, routeArgs("replace", netip.Prefix{}, via, wanIf)...); err != nil {
			return fmt.Errorf("configure %s: %w", role, err)
		}
	}
	return nil
}

// Close stops every process the lab started, kills whatever else still runs
// in its namespaces and deletes them. It is registered with t.Cleanup by New
// and safe to call more than once. On test failure it logs charon's logs.
func (l *Lab) Close() {
	l.closeOnce.Do(func() {
		if l.t.Failed() {
			l.mu.Lock()
			charons := append([]*Charon(nil), l.mu.charons...)
			l.mu.Unlock()
			for _, c := range charons {
				l.t.Logf("lab: charon log of %s:\n%s", c.host, tail(c.Log(), 200))
			}
			for _, r := range l.topo.roles() {
				if u, ok := l.Host(r).(*UML); ok {
					l.t.Logf("lab: console of kernel host %s (kept in %s):\n%s", u, u.dir, tail(u.Console(), 60))
				}
			}
		}
		if err := l.teardown(); err != nil {
			l.t.Errorf("lab %s: cleanup: %v", l.prefix, err)
		}
		unregister(l)
	})
}

// teardown does the work of Close exactly once, whether called by Close or
// by the signal handler (which must not use testing.TB); a second caller
// waits for the first and gets its result: every process in reverse order
// of its start, then every host through its Close.
func (l *Lab) teardown() error {
	l.downOnce.Do(func() {
		l.procs.stopAll()
		var errs []error
		for _, r := range l.topo.roles() {
			if h := l.Host(r); h != nil {
				errs = append(errs, h.Close())
			}
			errs = append(errs, removeDPDKRuntime(l.prefix+"-"+r))
		}
		removeMarker(l.prefix)
		l.downErr = errors.Join(errs...)
	})
	return l.downErr
}

// destroy removes the namespaces prefix-role that a lab of a dead test
// binary left behind (see RemoveStale), then its owner marker.
func destroy(prefix string, roles []string) []error {
	var errs []error
	for _, r := range roles {
		name := prefix + "-" + r
		if err := (&NS{Name: name}).Close(); err != nil {
			errs = append(errs, err)
		}
		if err := removeDPDKRuntime(name); err != nil {
			errs = append(errs, err)
		}
	}
	removeMarker(prefix)
	return errs
}

// removeDPDKRuntime removes what EAL left in /var/run/dpdk for a swanpathd
// on host name (its --file-prefix is the host's name; one that stopped
// removed it itself, one that was killed could not).
func removeDPDKRuntime(name string) error {
	return os.RemoveAll(filepath.Join("/var/run/dpdk", name))
}

// run runs a command in the root namespace; the error carries its stderr.
func run(ctx context.Context, args ...string) error {
	_, err := output(ctx, args...)
	return err
}

func output(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = append([]string{fmt.Sprintf("[... %d lines cut ...]", len(ls)-lines)}, ls[len(ls)-lines:]...)
	}
	return strings.Join(ls, "\n")
}
