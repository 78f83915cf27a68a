package sut

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/swanpath/swanpath/bench/traffic"
	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/bridge/pluginsock"
	"github.com/swanpath/swanpath/internal/swanpathdconf"
	"github.com/swanpath/swanpath/lab"
)

// TAP names of the benchmark's swanpathd (inside its own namespace).
const (
	LanTap = "blan"
	WanTap = "bwan"
)

// SwanpathdConfig is what differs between runs of swanpathd.
type SwanpathdConfig struct {
	Bin        string // bin/swanpathd
	Lan, Wan   string // DPDK device arguments of the two ports
	Lcores     string // "0,1": main and one worker
	MemoryMB   int
	Mbufs      int    // 0: swanpathd's default
	MaxSAs     int    // fastpath.max_sas; 0: swanpathd's default
	CryptoPMD  string // crypto.pmd
	CryptoMode string // crypto.mode
	FilePrefix string
}

// Swanpathd is swanpathd running in a namespace of its own.
type Swanpathd struct {
	NS      *lab.NS
	Dir     string
	Plugin  string
	Control string
	Prefix  string
	proc    *lab.Proc
}

func (c SwanpathdConfig) toml(dir string) ([]byte, error) {
	return swanpathdconf.Config{
		EAL: swanpathdconf.EAL{Lcores: c.Lcores, Memory: c.MemoryMB, FilePrefix: c.FilePrefix, InMemory: true},
		Ports: []swanpathdconf.Port{
			{Name: "lan", Device: c.Lan, Tap: LanTap},
			{Name: "wan", Device: c.Wan, Tap: WanTap},
		},
		Crypto:   swanpathdconf.Crypto{PMD: c.CryptoPMD, Mode: c.CryptoMode},
		Plugin:   swanpathdconf.Socket{Socket: filepath.Join(dir, "charon.sock")},
		Control:  swanpathdconf.Socket{Socket: filepath.Join(dir, "ctl.sock")},
		Fastpath: swanpathdconf.Fastpath{IdleSleepUS: 0, Mbufs: c.Mbufs, MaxSAs: c.MaxSAs, StateFile: filepath.Join(dir, "seq.json")},
		Log:      swanpathdconf.Log{Level: "warn"},
	}.Render("swanpath-bench")
}

// StartSwanpathd runs swanpathd in a new namespace and gives its TAPs the
// gateway's addresses, routes and (permanent) neighbours, which it mirrors
// from the kernel. It returns once the control socket answers.
func StartSwanpathd(ctx context.Context, cfg SwanpathdConfig) (d *Swanpathd, err error) {
	ns, err := newNetns(ctx)
	if err != nil {
		return nil, err
	}
	// unix socket paths are short: a directory right under /tmp
	dir, err := os.MkdirTemp("/tmp", "spb")
	if err != nil {
		ns.Close()
		return nil, err
	}
	d = &Swanpathd{NS: ns, Dir: dir, Plugin: filepath.Join(dir, "charon.sock"),
		Control: filepath.Join(dir, "ctl.sock"), Prefix: cfg.FilePrefix}
	defer func() {
		if err != nil {
			d.Close()
			d = nil
		}
	}()
	conf := filepath.Join(dir, "swanpathd.toml")
	toml, err := cfg.toml(dir)
	if err != nil {
		return d, err
	}
	if err := os.WriteFile(conf, toml, 0o600); err != nil {
		return d, err
	}
	if d.proc, err = ns.Start(cfg.Bin, "-config", conf); err != nil {
		return d, err
	}
	if err := lab.WaitReady(ctx, d.proc, d.Control); err != nil {
		return d, err
	}
	mac := func(b [6]byte) string { return net.HardwareAddr(b[:]).String() }
	for _, args := range [][]string{
		{"ip", "addr", "add", traffic.GatewayLAN.String() + "/24", "dev", LanTap},
		{"ip", "addr", "add", traffic.GatewayWAN.String() + "/24", "dev", WanTap},
		{"ip", "link", "set", LanTap, "up"},
		{"ip", "link", "set", WanTap, "up"},
		{"ip", "neigh", "replace", traffic.LANNextHop.String(), "lladdr", mac(traffic.LANNextHopMAC), "nud", "permanent", "dev", LanTap},
		{"ip", "neigh", "replace", traffic.PeerWAN.String(), "lladdr", mac(traffic.PeerMAC), "nud", "permanent", "dev", WanTap},
		{"ip", "route", "add", traffic.LocalNet.String(), "via", traffic.LANNextHop.String(), "dev", LanTap},
		{"ip", "route", "add", traffic.RemoteSpace.String(), "via", traffic.PeerWAN.String(), "dev", WanTap},
	} {
		if _, err := ns.Exec(ctx, args...); err != nil {
			return d, err
		}
	}
	return d, nil
}

// Pid is swanpathd's process id (ip netns exec execs it).
func (d *Swanpathd) Pid() int { return d.proc.Pid() }

// Alive reports whether swanpathd still runs.
func (d *Swanpathd) Alive() bool {
	select {
	case <-d.proc.Done():
		return false
	default:
		return true
	}
}

// Tail is the end of swanpathd's log.
func (d *Swanpathd) Tail(n int) string { return d.proc.Tail(n) }

// Counter reads one per-port counter (e.g. "wan", "tx").
func (d *Swanpathd) Counter(port, name string) (uint64, error) {
	st, err := d.Counters()
	if err != nil {
		return 0, err
	}
	p, ok := st[port]
	if !ok {
		return 0, fmt.Errorf("swanpathd: no port %q", port)
	}
	return p[name], nil
}

// Counters are every port's counters, by port name.
func (d *Swanpathd) Counters() (map[string]map[string]uint64, error) {
	rep, err := ctl.Call(d.Control, "stats")
	if err != nil {
		return nil, err
	}
	if rep.Stats == nil {
		return nil, errors.New("swanpathd: stats reply without stats")
	}
	m := map[string]map[string]uint64{}
	for _, p := range rep.Stats.Ports {
		m[p.Name] = p.Counters
	}
	return m, nil
}

// SAs is what `swanpathctl sa --json` shows.
func (d *Swanpathd) SAs() ([]ctl.SA, error) {
	rep, err := ctl.Call(d.Control, "sa")
	if err != nil {
		return nil, err
	}
	return rep.SAs, nil
}

// Policies is what `swanpathctl policy --json` shows.
func (d *Swanpathd) Policies() ([]ctl.Policy, error) {
	rep, err := ctl.Call(d.Control, "policy")
	if err != nil {
		return nil, err
	}
	return rep.Policies, nil
}

// Dial connects to the plugin socket, as charon's kernel-swanpath does.
func (d *Swanpathd) Dial(ctx context.Context) (*pluginsock.Client, error) {
	return pluginsock.Dial(ctx, d.Plugin)
}

// RSS is swanpathd's resident set in bytes (VmRSS; hugepages not included).
func (d *Swanpathd) RSS() (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Pid()))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// Telemetry connects to swanpathd's DPDK telemetry socket.
func (d *Swanpathd) Telemetry() (*Telemetry, error) {
	return DialTelemetry(TelemetryPath(d.Prefix))
}

// Close stops swanpathd (SIGTERM, then SIGKILL), deletes the namespace,
// its files and EAL's runtime directory.
func (d *Swanpathd) Close() error {
	var errs []error
	if d.proc != nil {
		errs = append(errs, d.proc.StopGrace(syscall.SIGTERM, 15*time.Second))
	}
	errs = append(errs, d.NS.Close())
	_ = os.RemoveAll(d.Dir)
	RemoveRuntimeDir(d.Prefix)
	return errors.Join(errs...)
}
