package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/vici"
	"github.com/swanpath/swanpath/fastpath"
)

// Config is swanpathd's TOML configuration (see packaging/swanpathd.toml
// for the commented example that ships).
type Config struct {
	EAL struct {
		Lcores     string   `toml:"lcores"`
		Memory     int      `toml:"memory"`
		FilePrefix string   `toml:"file_prefix"`
		InMemory   bool     `toml:"in_memory"`
		NoHuge     bool     `toml:"no_huge"`
		HugeDir    string   `toml:"huge_dir"`
		Extra      []string `toml:"extra"`
	} `toml:"eal"`
	Ports []struct {
		Name   string `toml:"name"`
		Device string `toml:"device"`
		Tap    string `toml:"tap"`
		MTU    int    `toml:"mtu"`
	} `toml:"port"`
	// Interfaces are the route-based interfaces: one TUN device each,
	// carrying the SAs and policies with its XFRM interface id (strongSwan
	// if_id_in/if_id_out) or its mark (mark_in/mark_out, libreswan mark=).
	Interfaces []interfaceConf `toml:"interface"`
	Crypto     struct {
		PMD  string `toml:"pmd"`
		Mode string `toml:"mode"`
	} `toml:"crypto"`
	Source struct {
		// Kind says where SAs and policies come from: "plugin" (charon's
		// kernel-swanpath plugin over plugin.socket) or "xfrm" (the
		// kernel's XFRM, as libreswan's pluto or charon's kernel-netlink
		// install them).
		Kind string `toml:"kind"`
	} `toml:"source"`
	Plugin struct {
		Socket string `toml:"socket"`
	} `toml:"plugin"`
	Control struct {
		Socket string `toml:"socket"`
	} `toml:"control"`
	Fastpath struct {
		NATTPort    int    `toml:"natt_port"`
		IdleSleepUS int    `toml:"idle_sleep_us"`
		Mbufs       int    `toml:"mbufs"`
		MaxSAs      int    `toml:"max_sas"`
		StateFile   string `toml:"state_file"`
	} `toml:"fastpath"`
	Log struct {
		Level string `toml:"level"`
	} `toml:"log"`
	Vici struct {
		// Socket is charon's VICI socket ("" disables VICI)
		Socket string `toml:"socket"`
	} `toml:"vici"`
	Charon struct {
		// ReconcileGrace is how long SAs and policies of a charon that
		// is gone stay once another charon has connected and does not
		// know them ("0" disables: they go at their hard lifetime).
		ReconcileGrace string `toml:"reconcile_grace"`
	} `toml:"charon"`
	Metrics struct {
		// Listen is the address of the Prometheus endpoint ("" : off)
		Listen string `toml:"listen"`
	} `toml:"metrics"`
}

// reconcileGrace is charon.reconcile_grace, checked by validate.
func (c *Config) reconcileGrace() time.Duration {
	d, _ := time.ParseDuration(c.Charon.ReconcileGrace)
	return d
}

func defaultConfig() Config {
	var c Config
	c.EAL.Lcores = "0,1"
	c.EAL.Memory = 256
	c.EAL.FilePrefix = "swanpath"
	c.EAL.InMemory = true
	c.Crypto.PMD = "aesni_gcm"
	c.Crypto.Mode = "cpu"
	c.Source.Kind = sourcePlugin
	c.Plugin.Socket = "/run/swanpath/charon.sock"
	c.Control.Socket = "/run/swanpath/swanpathd.sock"
	c.Fastpath.NATTPort = 4500
	c.Fastpath.MaxSAs = 16384
	c.Fastpath.StateFile = "/run/swanpath/outbound-seq.json"
	c.Log.Level = "info"
	c.Vici.Socket = vici.DefaultSocket
	c.Charon.ReconcileGrace = engine.DefaultReconcileGrace.String()
	return c
}

// Sources of SAs and policies (source.kind).
const (
	sourcePlugin = "plugin"
	sourceXFRM   = "xfrm"
)

var cryptoPMDs = []string{"aesni_gcm", "aesni_mb", "openssl"}

// loadConfig reads path over the defaults; every problem is reported at
// once, unknown keys included.
func loadConfig(path string) (Config, error) {
	c := defaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, fmt.Errorf("unknown key %q", k.String()))
	}
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return c, fmt.Errorf("config %s:\n  %w", path, joinIndented(errs))
	}
	return c, nil
}

func joinIndented(errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n  "))
}

func (c *Config) validate() []error {
	var errs []error
	if len(c.Ports) == 0 {
		errs = append(errs, errors.New("no [[port]]: at least one port is needed"))
	}
	names, taps := map[string]bool{}, map[string]bool{}
	for i, p := range c.Ports {
		where := fmt.Sprintf("port %d", i+1)
		if p.Name != "" {
			where = fmt.Sprintf("port %q", p.Name)
		}
		if p.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is missing", where))
		} else if names[p.Name] {
			errs = append(errs, fmt.Errorf("%s: duplicate name", where))
		}
		names[p.Name] = true
		if p.Device == "" {
			errs = append(errs, fmt.Errorf("%s: device is missing (DPDK device arguments, e.g. \"net_af_packet0,iface=eth1\" or a PCI address)", where))
		}
		switch {
		case p.Tap == "":
			errs = append(errs, fmt.Errorf("%s: tap is missing (name of the kernel exception interface)", where))
		case len(p.Tap) > 15:
			errs = append(errs, fmt.Errorf("%s: tap %q is longer than 15 characters", where, p.Tap))
		case taps[p.Tap]:
			errs = append(errs, fmt.Errorf("%s: tap %q used twice", where, p.Tap))
		}
		taps[p.Tap] = true
		if p.MTU < 0 || p.MTU > 9600 {
			errs = append(errs, fmt.Errorf("%s: mtu %d out of range", where, p.MTU))
		}
	}
	errs = append(errs, c.validateInterfaces(taps)...)
	if !slices.Contains(cryptoPMDs, c.Crypto.PMD) {
		errs = append(errs, fmt.Errorf("crypto.pmd %q: want one of %s", c.Crypto.PMD, strings.Join(cryptoPMDs, ", ")))
	}
	if c.Crypto.Mode != "cpu" && c.Crypto.Mode != "lookaside" {
		errs = append(errs, fmt.Errorf("crypto.mode %q: want cpu or lookaside", c.Crypto.Mode))
	}
	switch c.Source.Kind {
	case sourcePlugin:
		if c.Plugin.Socket == "" {
			errs = append(errs, errors.New("plugin.socket is empty"))
		}
	case sourceXFRM:
	default:
		errs = append(errs, fmt.Errorf("source.kind %q: want plugin (charon's kernel-swanpath plugin) or xfrm (the kernel's XFRM: libreswan, or charon with kernel-netlink)", c.Source.Kind))
	}
	if c.Control.Socket == "" {
		errs = append(errs, errors.New("control.socket is empty"))
	}
	if c.Fastpath.NATTPort <= 0 || c.Fastpath.NATTPort > 65535 {
		errs = append(errs, fmt.Errorf("fastpath.natt_port %d out of range", c.Fastpath.NATTPort))
	}
	if c.Fastpath.IdleSleepUS < 0 || c.Fastpath.IdleSleepUS > 100000 {
		errs = append(errs, fmt.Errorf("fastpath.idle_sleep_us %d out of range 0..100000", c.Fastpath.IdleSleepUS))
	}
	if c.Fastpath.MaxSAs < 64 || c.Fastpath.MaxSAs > 1<<20 {
		errs = append(errs, fmt.Errorf("fastpath.max_sas %d out of range 64..1048576", c.Fastpath.MaxSAs))
	}
	if c.Fastpath.StateFile == "" {
		errs = append(errs, errors.New("fastpath.state_file is empty (outbound sequence numbers must survive a restart)"))
	}
	if c.EAL.Lcores == "" {
		errs = append(errs, errors.New("eal.lcores is empty (need two: main and worker, e.g. \"0,1\")"))
	}
	if c.EAL.InMemory && c.EAL.NoHuge {
		errs = append(errs, errors.New("eal.in_memory and eal.no_huge cannot be combined (DPDK refuses it)"))
	}
	if c.EAL.Memory < 64 {
		errs = append(errs, fmt.Errorf("eal.memory %d MB: at least 64", c.EAL.Memory))
	}
	if c.Vici.Socket != "" && !strings.HasPrefix(c.Vici.Socket, "/") {
		errs = append(errs, fmt.Errorf("vici.socket %q: want an absolute path (or \"\" to go without VICI)", c.Vici.Socket))
	}
	if d, err := time.ParseDuration(c.Charon.ReconcileGrace); err != nil || d < 0 {
		errs = append(errs, fmt.Errorf("charon.reconcile_grace %q: want a duration such as \"4m\" or \"30s\" (\"0\" disables the reconciliation)", c.Charon.ReconcileGrace))
	} else if d > 0 && d < time.Second {
		errs = append(errs, fmt.Errorf("charon.reconcile_grace %q: at least 1s (or \"0\" to disable)", c.Charon.ReconcileGrace))
	}
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("metrics.listen %q: want host:port, e.g. \"127.0.0.1:9469\" (or \"\" for no metrics)", c.Metrics.Listen))
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	return errs
}

// ealArgs builds EAL's arguments (devices are added by the fast path).
func (c *Config) ealArgs() []string {
	// "0@0,1@0": lcores mapped on CPUs (e.g. main and worker on the one
	// CPU of a small VM) is EAL's --lcores; a plain list is -l
	lc := "-l"
	if strings.Contains(c.EAL.Lcores, "@") {
		lc = "--lcores"
	}
	args := []string{lc, c.EAL.Lcores, "--file-prefix", c.EAL.FilePrefix,
		"-m", fmt.Sprint(c.EAL.Memory), "--log-level", "lib.eal:notice"}
	if c.EAL.InMemory {
		args = append(args, "--in-memory")
	}
	if c.EAL.NoHuge {
		args = append(args, "--no-huge", "--no-shconf")
	}
	if c.EAL.HugeDir != "" {
		args = append(args, "--huge-dir", c.EAL.HugeDir)
	}
	return append(args, c.EAL.Extra...)
}

// maxPorts is how many ports and route-based interfaces the fast path has
// room for together (SP_MAX_PORTS).
const maxPorts = 8

// validateInterfaces checks the [[interface]] tables; taps are the port
// TAPs' names, which no interface may take.
func (c *Config) validateInterfaces(taps map[string]bool) []error {
	var errs []error
	if n := len(c.Ports) + len(c.Interfaces); n > maxPorts {
		errs = append(errs, fmt.Errorf("%d [[port]] and %d [[interface]]: at most %d together", len(c.Ports), len(c.Interfaces), maxPorts))
	}
	names, ids, marks := map[string]bool{}, map[uint32]string{}, map[uint32]string{}
	for i, ifc := range c.Interfaces {
		where := fmt.Sprintf("interface %d", i+1)
		if ifc.Name != "" {
			where = fmt.Sprintf("interface %q", ifc.Name)
		}
		switch {
		case ifc.Name == "":
			errs = append(errs, fmt.Errorf("%s: name is missing (the kernel interface, e.g. \"ipsec0\")", where))
		case len(ifc.Name) > 15:
			errs = append(errs, fmt.Errorf("%s: name is longer than 15 characters", where))
		case strings.ContainsAny(ifc.Name, "/ ,=") || ifc.Name == "." || ifc.Name == "..":
			errs = append(errs, fmt.Errorf("%s: not a valid interface name", where))
		case names[ifc.Name]:
			errs = append(errs, fmt.Errorf("%s: duplicate name", where))
		case taps[ifc.Name]:
			errs = append(errs, fmt.Errorf("%s: name is a port's tap", where))
		}
		names[ifc.Name] = true
		if ifc.IfID == 0 && ifc.Mark == 0 {
			errs = append(errs, fmt.Errorf("%s: neither if_id nor mark is set (the XFRM interface id or mark of its SAs and policies)", where))
		}
		if other, dup := ids[ifc.IfID]; dup && ifc.IfID != 0 {
			errs = append(errs, fmt.Errorf("%s: if_id %d is interface %q's too", where, ifc.IfID, other))
		}
		if other, dup := marks[ifc.Mark]; dup && ifc.Mark != 0 {
			errs = append(errs, fmt.Errorf("%s: mark %d is interface %q's too", where, ifc.Mark, other))
		}
		ids[ifc.IfID], marks[ifc.Mark] = ifc.Name, ifc.Name
		if ifc.MTU != 0 && (ifc.MTU < 1280 || ifc.MTU > 9000) {
			errs = append(errs, fmt.Errorf("%s: mtu %d out of range 1280..9000 (0: 1400)", where, ifc.MTU))
		}
		if _, err := mssClamp(ifc.MSSClamp); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	return errs
}

// mssClamp reads an [[interface]]'s mss_clamp: absent (0, off), "pmtu"
// (fastpath.MSSClampPMTU) or a number of bytes.
func mssClamp(v any) (int, error) {
	switch x := v.(type) {
	case nil:
		return 0, nil
	case string:
		if x == "pmtu" {
			return fastpath.MSSClampPMTU, nil
		}
	case int64:
		if x >= 536 && x <= 65495 {
			return int(x), nil
		}
		return 0, fmt.Errorf("mss_clamp %d out of range 536..65495", x)
	}
	return 0, fmt.Errorf("mss_clamp %v: want \"pmtu\" or a number of bytes (536..65495)", v)
}

// interfaceConf is one [[interface]] (Config.Interfaces).
type interfaceConf struct {
	Name string `toml:"name"`
	IfID uint32 `toml:"if_id"`
	Mark uint32 `toml:"mark"`
	MTU  int    `toml:"mtu"`
	// MSSClamp: "pmtu" or a number clamps the MSS of TCP SYNs
	// through the interface (off when absent)
	MSSClamp any `toml:"mss_clamp"`
}
