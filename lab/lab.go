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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Namespace roles, passed to (*Lab).NS.
const (
	H1 = "h1" // LAN host behind the gateway
	GW = "gw" // the gateway (swanpathd + charon in the real tests)
	PR = "pr" // the IPsec peer (charon + kernel-libipsec)
	H2 = "h2" // host behind the peer
	NR = "nr" // NAT router between gateway and peer (Options.NAT)
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
}

// Lab is one instance of the topology.
type Lab struct {
	t            testing.TB
	prefix       string // e.g. "sp1a2b3c"; namespaces are prefix-role
	nat          bool
	ipv6         bool
	swanpathPeer bool
	dir          string // per-test working dir for configs, logs, captures

	mu struct {
		sync.Mutex
		procs   []*Proc
		charons []*Charon
	}
	closeOnce sync.Once
	downOnce  sync.Once
	downErr   error
}

// New builds the topology and registers its removal with t.Cleanup. It skips
// the test when not run as root or with -short.
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
	if opts.NAT && (opts.IPv6 || opts.SwanpathPeer) {
		t.Fatalf("lab: Options.NAT does not go with IPv6 or SwanpathPeer (the NAT router is IPv4 only and expects a kernel-libipsec peer)")
	}
	if err := RemoveStale(); err != nil {
		t.Logf("lab: removing stale namespaces: %v", err)
	}
	installSignalHandler()

	l := &Lab{t: t, prefix: newPrefix(), dir: t.TempDir(), nat: opts.NAT, ipv6: opts.IPv6, swanpathPeer: opts.SwanpathPeer}
	if err := writeMarker(l.prefix); err != nil {
		t.Fatalf("lab: %v", err)
	}
	register(l)
	t.Cleanup(l.Close)

	if err := l.build(opts); err != nil {
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

// NS returns the handle of a namespace by role (H1, GW, PR, H2).
func (l *Lab) NS(role string) *NS {
	return &NS{lab: l, Name: l.prefix + "-" + role}
}

func (l *Lab) roles() []string {
	if l.nat {
		return []string{H1, GW, NR, PR, H2}
	}
	return []string{H1, GW, PR, H2}
}

// NAT says whether the peer is behind the NAT router.
func (l *Lab) NAT() bool { return l.nat }

// IPv6 says whether the links carry IPv6 addresses too (Options.IPv6).
func (l *Lab) IPv6() bool { return l.ipv6 }

// SwanpathPeer says whether the peer is a swanpath gateway too
// (Options.SwanpathPeer).
func (l *Lab) SwanpathPeer() bool { return l.swanpathPeer }

func (l *Lab) build(opts Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, r := range l.roles() {
		name := l.NS(r).Name
		if err := run(ctx, "ip", "netns", "add", name); err != nil {
			return err
		}
		if err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	h1, gw, pr, h2 := l.NS(H1), l.NS(GW), l.NS(PR), l.NS(H2)

	// veths are created directly inside the namespaces: no names in the
	// root namespace, so concurrent labs never collide.
	type link struct {
		a   *NS
		aIf string
		b   *NS
		bIf string
	}
	links := []link{{gw, GWLan, h1, HostIf}, {gw, GWWan, pr, PRWan}, {pr, PRLan, h2, HostIf}}
	if l.nat {
		nr := l.NS(NR)
		links[1] = link{gw, GWWan, nr, "wan"}
		links = append(links, link{nr, "lan", pr, PRWan})
	}
	for _, lk := range links {
		if err := run(ctx, "ip", "-n", lk.a.Name, "link", "add", lk.aIf, "type", "veth",
			"peer", "name", lk.bIf, "netns", lk.b.Name); err != nil {
			return err
		}
		for _, end := range []struct {
			ns *NS
			If string
		}{{lk.a, lk.aIf}, {lk.b, lk.bIf}} {
			if err := run(ctx, "ip", "-n", end.ns.Name, "link", "set", end.If, "up"); err != nil {
				return err
			}
			// A veth leaves TCP/UDP checksums to "hardware" that is not
			// there. A frame that AF_PACKET hands to DPDK (and DPDK on to
			// a TAP or into a tunnel) keeps the unfinished checksum and
			// is dropped at its destination. Real NICs finish checksums
			// on the wire; here the senders must do it themselves.
			if err := run(ctx, "ip", "netns", "exec", end.ns.Name, "ethtool", "-K", end.If, "tx", "off"); err != nil {
				return err
			}
		}
	}

	cmds := [][]string{
		{"ip", "-n", h1.Name, "addr", "add", H1Addr + "/24", "dev", HostIf},
		{"ip", "-n", h1.Name, "route", "add", "default", "via", GWLanAddr},
		{"ip", "-n", h2.Name, "addr", "add", H2Addr + "/24", "dev", HostIf},
		{"ip", "-n", h2.Name, "route", "add", "default", "via", PRLanAddr},
	}
	if l.ipv6 {
		cmds = append(cmds,
			[]string{"ip", "-n", h1.Name, "addr", "add", H1Addr6 + "/64", "dev", HostIf, "nodad"},
			[]string{"ip", "-n", h1.Name, "-6", "route", "add", "default", "via", GWLanAddr6},
			[]string{"ip", "-n", h2.Name, "addr", "add", H2Addr6 + "/64", "dev", HostIf, "nodad"},
			[]string{"ip", "-n", h2.Name, "-6", "route", "add", "default", "via", PRLanAddr6})
	}
	for _, c := range cmds {
		if err := run(ctx, c...); err != nil {
			return err
		}
	}
	for _, ns := range []*NS{gw, pr} {
		if err := l.forwarding(ctx, ns); err != nil {
			return err
		}
	}
	if !l.swanpathPeer {
		if err := l.ConfigurePeer(PRLan, PRWan); err != nil {
			return err
		}
	}
	if l.nat {
		if err := l.buildNAT(ctx); err != nil {
			return err
		}
	}
	if opts.GatewayAddrs {
		return l.ConfigureGateway(GWLan, GWWan)
	}
	return nil
}

// forwarding switches IP forwarding on in ns (IPv6 too with Options.IPv6).
func (l *Lab) forwarding(ctx context.Context, ns *NS) error {
	if err := ns.Sysctl(ctx, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if l.ipv6 {
		return ns.Sysctl(ctx, "net.ipv6.conf.all.forwarding", "1")
	}
	return nil
}

// PeerAddr is the peer's own WAN address (behind the NAT with Options.NAT).
func (l *Lab) PeerAddr() string {
	if l.nat {
		return PRNatAddr
	}
	return PRWanAddr
}

// buildNAT addresses the NAT router and the peer behind it and masquerades
// the peer to ports 20000-29999 (so its NAT-T port is not 4500).
func (l *Lab) buildNAT(ctx context.Context) error {
	nr, pr := l.NS(NR), l.NS(PR)
	for _, c := range [][]string{
		{"ip", "-n", nr.Name, "addr", "add", PRWanAddr + "/24", "dev", "wan"},
		{"ip", "-n", nr.Name, "addr", "add", NRInsideAddr + "/24", "dev", "lan"},
		{"ip", "-n", pr.Name, "route", "add", "default", "via", NRInsideAddr},
	} {
		if err := run(ctx, c...); err != nil {
			return err
		}
	}
	if err := nr.Sysctl(ctx, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	return l.natRules(ctx, 20000, 29999)
}

func (l *Lab) natRules(ctx context.Context, lo, hi int) error {
	rules := fmt.Sprintf(`flush ruleset
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" ip protocol udp masquerade to :%d-%d
		oifname "wan" masquerade
	}
}
`, lo, hi)
	cmd := l.NS(NR).command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nat router: nft: %w: %s", err, out)
	}
	return nil
}

// RemapNAT makes the NAT router forget its mappings and map the peer to
// ports lo-hi from now on, as a NAT box that reboots or times out does.
func (l *Lab) RemapNAT(ctx context.Context, lo, hi int) error {
	if !l.nat {
		return errors.New("remap NAT: the lab has no NAT router")
	}
	if err := l.natRules(ctx, lo, hi); err != nil {
		return err
	}
	h, err := netns.GetFromName(l.NS(NR).Name)
	if err != nil {
		return fmt.Errorf("remap NAT: %w", err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("remap NAT: %w", err)
	}
	defer nh.Close()
	if err := nh.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("remap NAT: flush conntrack: %w", err)
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
	if err := l.configureRouter(l.NS(GW), lanIf, wanIf, [2]string{GWLanAddr, GWWanAddr}, [2]string{GWLanAddr6, GWWanAddr6}); err != nil {
		return fmt.Errorf("configure gateway: %w", err)
	}
	// as on every real gateway, a default route out of the WAN (to the
	// peer or the NAT router in front of it, both at PRWanAddr): a packet
	// no policy takes leaves there in clear, which a gateway with only
	// its connected networks would hide
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defaults := [][]string{{"route", "replace", "default", "via", PRWanAddr, "dev", wanIf}}
	if l.ipv6 {
		defaults = append(defaults, []string{"-6", "route", "replace", "default", "via", PRWanAddr6, "dev", wanIf})
	}
	for _, c := range defaults {
		if err := run(ctx, append([]string{"ip", "-n", l.NS(GW).Name}, c...)...); err != nil {
			return fmt.Errorf("configure gateway: %w", err)
		}
	}
	return nil
}

// ConfigurePeer is ConfigureGateway for the peer (pr): 10.2.0.1/24 on lanIf,
// its WAN address (Lab.PeerAddr)/24 on wanIf, with Options.IPv6 also
// fd00:2::1/64 and fd00:192::2/64. The lab calls it on pr's veths unless
// Options.SwanpathPeer; then StartSwanpathGateway calls it on the TAPs of
// pr's swanpathd.
func (l *Lab) ConfigurePeer(lanIf, wanIf string) error {
	if err := l.configureRouter(l.NS(PR), lanIf, wanIf, [2]string{PRLanAddr, l.PeerAddr()}, [2]string{PRLanAddr6, PRWanAddr6}); err != nil {
		return fmt.Errorf("configure peer: %w", err)
	}
	return nil
}

// configureRouter puts addr4 (lan, wan) as /24 and, with Options.IPv6,
// addr6 as /64 without DAD on lanIf and wanIf in ns.
func (l *Lab) configureRouter(ns *NS, lanIf, wanIf string, addr4, addr6 [2]string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmds := [][]string{
		{"link", "set", lanIf, "up"},
		{"link", "set", wanIf, "up"},
		{"addr", "replace", addr4[0] + "/24", "dev", lanIf},
		{"addr", "replace", addr4[1] + "/24", "dev", wanIf},
	}
	if l.ipv6 {
		cmds = append(cmds,
			[]string{"addr", "replace", addr6[0] + "/64", "dev", lanIf, "nodad"},
			[]string{"addr", "replace", addr6[1] + "/64", "dev", wanIf, "nodad"})
	}
	for _, c := range cmds {
		if err := run(ctx, append([]string{"ip", "-n", ns.Name}, c...)...); err != nil {
			return err
		}
	}
	return l.forwarding(ctx, ns)
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
				l.t.Logf("lab: charon log of %s:\n%s", c.ns.Name, tail(c.Log(), 200))
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
// waits for the first and gets its result.
func (l *Lab) teardown() error {
	l.downOnce.Do(func() {
		l.mu.Lock()
		procs := append([]*Proc(nil), l.mu.procs...)
		l.mu.Unlock()
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop()
		}
		l.downErr = errors.Join(destroy(l.prefix, l.roles())...)
	})
	return l.downErr
}

// destroy kills every process left in the namespaces prefix-role and
// deletes them, removes what EAL left in /var/run/dpdk for a swanpathd
// there (its --file-prefix is the namespace's name; one that stopped
// removed it itself, one that was killed could not), then removes the
// owner marker.
func destroy(prefix string, roles []string) []error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errs []error
	for _, r := range roles {
		name := prefix + "-" + r
		if netnsExists(name) {
			killNetnsPids(ctx, name)
			if err := run(ctx, "ip", "netns", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(filepath.Join("/var/run/dpdk", name)); err != nil {
			errs = append(errs, err)
		}
	}
	removeMarker(prefix)
	return errs
}

// killNetnsPids SIGKILLs every process in namespace name and waits (polling)
// until none is left, so that the namespace really goes away on delete.
func killNetnsPids(ctx context.Context, name string) {
	for {
		out, err := output(ctx, "ip", "netns", "pids", name)
		if err != nil || strings.TrimSpace(out) == "" {
			return
		}
		for _, f := range strings.Fields(out) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func netnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
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
