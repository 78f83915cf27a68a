package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/internal/swanpathdconf"
)

// TAP interfaces swanpathd creates in the lab: in the gateway, and in the
// peer when it is a swanpath gateway too (Options.SwanpathPeer).
const (
	GWLanTap = "tlan"
	GWWanTap = "twan"
	PRLanTap = "tlan"
	PRWanTap = "twan"
)

// Swanpathd is swanpathd running in the gateway namespace (or the peer's,
// see NewSwanpathdIn), its DPDK ports on that namespace's veths lan and wan
// (net_af_packet) and its TAPs tlan/twan.
type Swanpathd struct {
	l       *Lab
	role    string // GW or PR
	Bin     string // swanpathd
	CtlBin  string // swanpathctl
	Conf    string
	Plugin  string // plugin socket (charon connects here)
	Control string // control socket (swanpathctl)
	proc    *Proc
}

// NewSwanpathd writes the gateway's swanpathd configuration for this lab.
// The sockets live in a short directory (unix socket paths are limited to
// 108 bytes) that the lab removes.
func (l *Lab) NewSwanpathd(bin, ctlBin string) (*Swanpathd, error) {
	return l.NewSwanpathdIn(GW, bin, ctlBin)
}

// NewSwanpathdIn is NewSwanpathd for namespace role GW or PR (Options.
// SwanpathPeer). Each has its own sockets, state file and DPDK
// --file-prefix.
func (l *Lab) NewSwanpathdIn(role, bin, ctlBin string) (*Swanpathd, error) {
	var lanIf, wanIf, lanTap, wanTap string
	switch {
	case role == GW:
		lanIf, wanIf, lanTap, wanTap = GWLan, GWWan, GWLanTap, GWWanTap
	case role == PR && l.SwanpathPeer():
		lanIf, wanIf, lanTap, wanTap = PRLan, PRWan, PRLanTap, PRWanTap
	default:
		return nil, fmt.Errorf("swanpathd in %s: only in gw, or in pr with Options.SwanpathPeer", role)
	}
	dir, err := os.MkdirTemp("", "spd"+role)
	if err != nil {
		return nil, err
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	prefix := l.prefix + "-" + role // the namespace's name (see destroy)
	d := &Swanpathd{l: l, role: role, Bin: bin, CtlBin: ctlBin, Conf: filepath.Join(dir, "swanpathd.toml"),
		Plugin: filepath.Join(dir, "charon.sock"), Control: filepath.Join(dir, "ctl.sock")}
	var ifcs []swanpathdconf.Interface
	wanDev := "net_af_packet1,iface=" + wanIf
	if role == GW {
		ifcs = l.gwInterfaces
		if l.gwWANPcap {
			wanDev = "net_pcap1,iface=" + wanIf
		}
	}
	conf, err := swanpathdconf.Config{
		Interfaces: ifcs,
		EAL:        swanpathdconf.EAL{Lcores: "0,1", Memory: 256, FilePrefix: prefix, InMemory: true},
		Ports: []swanpathdconf.Port{
			{Name: "lan", Device: "net_af_packet0,iface=" + lanIf, Tap: lanTap},
			{Name: "wan", Device: wanDev, Tap: wanTap},
		},
		Plugin:  swanpathdconf.Socket{Socket: d.Plugin},
		Control: swanpathdconf.Socket{Socket: d.Control},
		// the lab shares two cores with two charons and iperf3
		Fastpath: swanpathdconf.Fastpath{IdleSleepUS: 20, StateFile: filepath.Join(dir, "outbound-seq.json")},
		Log:      swanpathdconf.Log{Level: "debug"},
		Charon:   swanpathdconf.Charon{ReconcileGrace: l.reconcileGrace},
		Metrics:  swanpathdconf.Metrics{Listen: l.metricsListen},
	}.Render("swanpath lab")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(d.Conf, conf, 0o600); err != nil {
		return nil, err
	}
	return d, nil
}

// Start runs swanpathd and returns once its control socket answers (it
// listens only after the fast path forwards).
func (d *Swanpathd) Start(ctx context.Context) error {
	p, err := d.l.Host(d.role).Start(d.Bin, "-config", d.Conf)
	if err != nil {
		return err
	}
	d.proc = p
	if _, ok := d.l.Host(d.role).(*UML); ok {
		return d.waitReadyKernel(ctx)
	}
	return WaitReady(ctx, p, d.Control)
}

// WaitReady polls the control socket of swanpathd p until it answers (it
// listens only after the fast path forwards), for at most a minute; it
// fails at once when p exits.
func WaitReady(ctx context.Context, p *Proc, control string) error {
	err := PollFor(ctx, "swanpathd ready", 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		select {
		case <-p.Done():
			return false, Abort(fmt.Errorf("swanpathd exited during start:\n%s", p.Tail(60)))
		default:
		}
		_, err := ctl.Call(control, "stats")
		return err == nil, err
	})
	if err != nil && !isDone(p) {
		return fmt.Errorf("swanpathd did not become ready: %w\n%s", err, p.Tail(60))
	}
	return err
}

func isDone(p *Proc) bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits for the exit.
func (d *Swanpathd) Stop() error { return d.proc.Stop() }

// Kill ends swanpathd with SIGKILL, as a crash would (no clean stop, no
// final state file), and waits for the exit.
func (d *Swanpathd) Kill(ctx context.Context) error {
	if err := d.proc.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if err := d.proc.Wait(ctx); errors.Is(err, ctx.Err()) && err != nil {
		return fmt.Errorf("swanpathd did not exit after SIGKILL: %w", err)
	}
	return nil
}

// Output is what swanpathd logged so far.
func (d *Swanpathd) Output() string {
	if d.proc == nil {
		return ""
	}
	return d.proc.Output()
}

// Role is the namespace swanpathd runs in (GW or PR).
func (d *Swanpathd) Role() string { return d.role }

// Ctl runs swanpathctl (the real CLI) in swanpathd's namespace.
func (d *Swanpathd) Ctl(ctx context.Context, args ...string) (string, error) {
	return d.l.Host(d.role).Exec(ctx, append([]string{d.CtlBin, "-socket", d.Control}, args...)...)
}

// SAs is `swanpathctl sa --json`, decoded.
func (d *Swanpathd) SAs(ctx context.Context) ([]ctl.SA, error) {
	out, err := d.Ctl(ctx, "sa", "--json")
	if err != nil {
		return nil, err
	}
	var sas []ctl.SA
	if err := json.Unmarshal([]byte(out), &sas); err != nil {
		return nil, fmt.Errorf("swanpathctl sa --json: %w: %q", err, out)
	}
	return sas, nil
}

// Stats is `swanpathctl stats --json` as port name -> counter -> value.
func (d *Swanpathd) Stats(ctx context.Context) (map[string]map[string]uint64, error) {
	out, err := d.Ctl(ctx, "stats", "--json")
	if err != nil {
		return nil, err
	}
	var st ctl.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("swanpathctl stats --json: %w: %q", err, out)
	}
	m := map[string]map[string]uint64{}
	for _, p := range st.Ports {
		m[p.Name] = p.Counters
	}
	return m, nil
}

// SwanpathGateway is a lab whose gateway runs swanpathd and charon with the
// kernel-swanpath plugin, facing a kernel-libipsec peer or, with
// Options.SwanpathPeer, a second swanpath gateway; tunnel up.
type SwanpathGateway struct {
	D      *Swanpathd // the gateway's
	PD     *Swanpathd // the peer's with Options.SwanpathPeer, else nil
	GW, PR *Charon
	l      *Lab
}

// PluginPath is where `make install-plugin` puts the charon plugin.
const PluginPath = "/usr/lib/ipsec/plugins/libstrongswan-kernel-swanpath.so"

// StartSwanpathGateway starts swanpathd, configures the gateway's addresses
// on its TAPs, starts both charons (the peer's as a swanpath gateway with
// Options.SwanpathPeer), initiates the tunnel from the gateway (from the
// peer behind the NAT router) and waits until both sides have the CHILD_SA
// installed. With tun.GatewayStart "trap" it returns once the trap policies
// are loaded.
func (l *Lab) StartSwanpathGateway(ctx context.Context, bin, ctlBin string, tun Tunnel) (*SwanpathGateway, error) {
	if _, err := os.Stat(PluginPath); err != nil {
		return nil, fmt.Errorf("charon plugin: %w (run `make install-plugin` as root)", err)
	}
	if err := tun.check(l.IPv6()); err != nil {
		return nil, err
	}
	d, err := l.NewSwanpathd(bin, ctlBin)
	if err != nil {
		return nil, err
	}
	if err := d.Start(ctx); err != nil {
		return nil, err
	}
	g := &SwanpathGateway{D: d, l: l}
	if err := l.ConfigureGateway(GWLanTap, GWWanTap); err != nil {
		return g, err
	}
	g.GW, err = l.StartCharon(GW, CharonOptions{
		Plugins:  []Plugin{SwanpathPlugin(d)},
		Swanctl:  tun.GatewayConf(),
		Settings: tun.GatewayCharonSettings,
	})
	if err != nil {
		return g, err
	}
	if err := g.GW.LoadAll(ctx); err != nil {
		return g, err
	}
	if l.SwanpathPeer() {
		g.PD, g.PR, err = l.startSwanpathPeer(ctx, bin, ctlBin, tun)
	} else {
		g.PR, err = l.StartPeer(ctx, tun)
	}
	if err != nil {
		return g, err
	}
	if tun.GatewayStart == "trap" {
		// the first packet that matches the trap policy brings it up
		return g, nil
	}
	return g, g.initiate(ctx)
}

// SwanpathPlugin is the kernel-swanpath plugin connected to d.
func SwanpathPlugin(d *Swanpathd) Plugin {
	return Plugin{Name: "kernel-swanpath", Settings: []string{"socket = " + d.Plugin}}
}

// startSwanpathPeer makes pr a swanpath gateway: swanpathd on pr's veths,
// pr's addresses on its TAPs, charon with kernel-swanpath, tun loaded.
func (l *Lab) startSwanpathPeer(ctx context.Context, bin, ctlBin string, tun Tunnel) (*Swanpathd, *Charon, error) {
	d, err := l.NewSwanpathdIn(PR, bin, ctlBin)
	if err != nil {
		return nil, nil, err
	}
	if err := d.Start(ctx); err != nil {
		return d, nil, err
	}
	if err := l.ConfigurePeer(PRLanTap, PRWanTap); err != nil {
		return d, nil, err
	}
	c, err := l.StartCharon(PR, CharonOptions{Plugins: []Plugin{SwanpathPlugin(d)}, Swanctl: l.PeerConf(tun)})
	if err != nil {
		return d, nil, err
	}
	return d, c, c.LoadAll(ctx)
}

// initiate brings the CHILD_SA up from the gateway (from the peer behind
// the NAT router, as nothing forwards to it) and waits until both sides
// have it installed.
func (g *SwanpathGateway) initiate(ctx context.Context) error {
	initiator := g.GW
	if g.l.NAT() {
		initiator = g.PR
	}
	if err := initiator.Initiate(ctx, ChildName); err != nil {
		return fmt.Errorf("initiate: %w", err)
	}
	for _, c := range []*Charon{g.GW, g.PR} {
		if _, err := c.WaitEstablished(ctx, ChildName); err != nil {
			return err
		}
	}
	return nil
}

// Renegotiate replaces the tunnel: it closes the IKE_SA, waits until both
// charons and the fast paths have no SA left, loads tun into both charons
// and brings the new tunnel up as StartSwanpathGateway does. Tests use it
// to run several suites on one lab.
func (g *SwanpathGateway) Renegotiate(ctx context.Context, tun Tunnel) error {
	if err := tun.check(g.l.IPv6()); err != nil {
		return err
	}
	if err := g.GW.Terminate(ctx, ConnName); err != nil {
		return err
	}
	err := Poll(ctx, "no SA left", 50*time.Millisecond, func() (bool, error) {
		for _, c := range []*Charon{g.GW, g.PR} {
			sas, err := c.ListSAs(ctx)
			if err != nil || len(sas) != 0 {
				return false, fmt.Errorf("%s: %v %s", c.host, err, summarize(sas))
			}
		}
		for _, d := range []*Swanpathd{g.D, g.PD} {
			if d == nil {
				continue
			}
			sas, err := d.SAs(ctx)
			if err != nil || len(sas) != 0 {
				return false, fmt.Errorf("swanpathd in %s: %v, %d SAs", d.role, err, len(sas))
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("renegotiate: old SAs still there: %w", err)
	}
	if err := g.GW.Load(ctx, tun.GatewayConf()); err != nil {
		return err
	}
	if err := g.PR.Load(ctx, g.l.PeerConf(tun)); err != nil {
		return err
	}
	if tun.GatewayStart == "trap" {
		return nil
	}
	return g.initiate(ctx)
}

// Proc is swanpathd's process (nil before Start).
func (d *Swanpathd) Proc() *Proc { return d.proc }
