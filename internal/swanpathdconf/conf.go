// Package swanpathdconf writes swanpathd's TOML configuration for the
// programs that start swanpathd themselves (the lab, the benchmark). The
// keys are those cmd/swanpathd decodes; a test there renders every field
// set and loads it with swanpathd's own loader, which rejects unknown keys,
// so the two cannot drift apart. A zero field marked omitempty or omitzero is left out
// and swanpathd's default applies.
package swanpathdconf

import (
	"bytes"
	"fmt"

	"github.com/BurntSushi/toml"
)

// Config is swanpathd's configuration as a starter renders it.
type Config struct {
	EAL   EAL    `toml:"eal"`
	Ports []Port `toml:"port"`
	// Interfaces are the route-based interfaces ([[interface]])
	Interfaces []Interface `toml:"interface,omitempty"`
	Crypto     Crypto      `toml:"crypto,omitempty"`
	Source     Source      `toml:"source,omitempty"`
	Plugin     Socket      `toml:"plugin"`
	Control    Socket      `toml:"control"`
	Fastpath   Fastpath    `toml:"fastpath"`
	Log        Log         `toml:"log"`
	Charon     Charon      `toml:"charon,omitempty"`
	Metrics    Metrics     `toml:"metrics,omitempty"`
	// Vici is charon's VICI socket; nil keeps swanpathd's default
	Vici *Socket `toml:"vici,omitempty"`
}

// Charon is the [charon] table; empty fields keep swanpathd's defaults.
type Charon struct {
	// ReconcileGrace is a duration ("30s"; "0" disables)
	ReconcileGrace string `toml:"reconcile_grace,omitempty"`
}

// Metrics is the [metrics] table; an empty Listen keeps them off.
type Metrics struct {
	Listen string `toml:"listen,omitempty"`
}

// EAL is the [eal] table.
type EAL struct {
	Lcores     string `toml:"lcores"`
	Memory     int    `toml:"memory"`
	FilePrefix string `toml:"file_prefix"`
	InMemory   bool   `toml:"in_memory"`
	NoHuge     bool   `toml:"no_huge,omitempty"`
	HugeDir    string `toml:"huge_dir,omitempty"`
}

// Port is one [[port]]: a DPDK device and its TAP.
type Port struct {
	Name   string `toml:"name"`
	Device string `toml:"device"`
	Tap    string `toml:"tap"`
	MTU    int    `toml:"mtu,omitzero"`
}

// Interface is one [[interface]]: a route-based interface (a TUN device)
// for the SAs and policies with its XFRM interface id or mark.
type Interface struct {
	Name string `toml:"name"`
	IfID uint32 `toml:"if_id,omitzero"`
	Mark uint32 `toml:"mark,omitzero"`
	MTU  int    `toml:"mtu,omitzero"`
	// MSSClamp is "pmtu", a number (int) or nil (off)
	MSSClamp any `toml:"mss_clamp,omitempty"`
}

// Crypto is the [crypto] table; empty fields keep swanpathd's defaults.
type Crypto struct {
	PMD  string `toml:"pmd,omitempty"`
	Mode string `toml:"mode,omitempty"`
}

// Source is the [source] table; empty: swanpathd's default (plugin).
type Source struct {
	Kind string `toml:"kind,omitempty"` // "plugin" or "xfrm"
}

// Socket is [plugin] and [control].
type Socket struct {
	Socket string `toml:"socket"`
}

// Fastpath is the [fastpath] table. IdleSleepUS is always written: 0 (busy
// polling) is a choice, not a default.
type Fastpath struct {
	NATTPort    int    `toml:"natt_port,omitzero"`
	IdleSleepUS int    `toml:"idle_sleep_us"`
	Mbufs       int    `toml:"mbufs,omitzero"`
	MaxSAs      int    `toml:"max_sas,omitzero"`
	StateFile   string `toml:"state_file"`
}

// Log is the [log] table.
type Log struct {
	Level string `toml:"level"`
}

// Render is c as TOML, headed by a comment naming who wrote it.
func (c Config) Render(by string) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# written by %s\n", by)
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return nil, fmt.Errorf("render swanpathd config: %w", err)
	}
	return b.Bytes(), nil
}
