package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/swanpath/swanpath/internal/swanpathdconf"
)

// TestRenderedConfigLoads: a configuration that swanpathdconf renders with
// every field set is one that swanpathd loads (unknown keys are refused,
// so a key the renderer writes and Config lacks fails here) and reads back
// value for value. The lab and the benchmark write their swanpathd.toml
// with swanpathdconf.
func TestRenderedConfigLoads(t *testing.T) {
	in := swanpathdconf.Config{
		EAL: swanpathdconf.EAL{Lcores: "0,1", Memory: 128, FilePrefix: "fp", InMemory: false, NoHuge: true, HugeDir: "/h"},
		Ports: []swanpathdconf.Port{
			{Name: "lan", Device: "net_af_packet0,iface=lan", Tap: "tlan", MTU: 1600},
			{Name: "wan", Device: "net_af_packet1,iface=wan", Tap: "twan"},
		},
		Crypto:   swanpathdconf.Crypto{PMD: "aesni_mb", Mode: "lookaside"},
		Source:   swanpathdconf.Source{Kind: "xfrm"},
		Plugin:   swanpathdconf.Socket{Socket: "/p.sock"},
		Control:  swanpathdconf.Socket{Socket: "/c.sock"},
		Fastpath: swanpathdconf.Fastpath{NATTPort: 4501, IdleSleepUS: 20, Mbufs: 8192, MaxSAs: 1024, StateFile: "/seq.json"},
		Log:      swanpathdconf.Log{Level: "debug"},
		Charon:   swanpathdconf.Charon{ReconcileGrace: "30s"},
		Metrics:  swanpathdconf.Metrics{Listen: "127.0.0.1:9469"},
	}
	c, b := renderAndLoad(t, in)
	e, f := c.EAL, c.Fastpath
	if e.Lcores != "0,1" || e.Memory != 128 || e.FilePrefix != "fp" || e.InMemory || !e.NoHuge || e.HugeDir != "/h" ||
		c.Crypto.PMD != "aesni_mb" || c.Crypto.Mode != "lookaside" || c.Source.Kind != "xfrm" || c.Plugin.Socket != "/p.sock" || c.Control.Socket != "/c.sock" ||
		f.NATTPort != 4501 || f.IdleSleepUS != 20 || f.Mbufs != 8192 || f.MaxSAs != 1024 || f.StateFile != "/seq.json" || c.Log.Level != "debug" ||
		c.reconcileGrace() != 30*time.Second || c.Metrics.Listen != "127.0.0.1:9469" {
		t.Errorf("loaded config differs from the rendered one: %+v\n%s", c, b)
	}
	if len(c.Ports) != 2 || c.Ports[0].Name != "lan" || c.Ports[0].Device != "net_af_packet0,iface=lan" || c.Ports[0].Tap != "tlan" ||
		c.Ports[0].MTU != 1600 || c.Ports[1].Tap != "twan" {
		t.Errorf("ports differ: %+v", c.Ports)
	}
}

// TestRenderedInterfacesLoad: [[interface]] tables as swanpathdconf
// renders them are what swanpathd reads.
func TestRenderedInterfacesLoad(t *testing.T) {
	in := swanpathdconf.Config{
		EAL:        swanpathdconf.EAL{Lcores: "0,1", Memory: 128, FilePrefix: "fp", InMemory: true},
		Ports:      []swanpathdconf.Port{{Name: "wan", Device: "net_af_packet1,iface=wan", Tap: "twan"}},
		Interfaces: []swanpathdconf.Interface{{Name: "ipsec0", IfID: 20, MTU: 1400, MSSClamp: "pmtu"}, {Name: "vti1", Mark: 21, MSSClamp: 1300}},
		Plugin:     swanpathdconf.Socket{Socket: "/p.sock"},
		Control:    swanpathdconf.Socket{Socket: "/c.sock"},
		Fastpath:   swanpathdconf.Fastpath{StateFile: "/seq.json"},
		Log:        swanpathdconf.Log{Level: "info"},
	}
	c, b := renderAndLoad(t, in)
	if len(c.Interfaces) != 2 || c.Interfaces[0].Name != "ipsec0" || c.Interfaces[0].IfID != 20 || c.Interfaces[0].MTU != 1400 ||
		c.Interfaces[1].Name != "vti1" || c.Interfaces[1].Mark != 21 || c.Interfaces[1].IfID != 0 {
		t.Errorf("interfaces differ: %+v\n%s", c.Interfaces, b)
	}
	if m0, _ := mssClamp(c.Interfaces[0].MSSClamp); m0 != -1 {
		t.Errorf("mss_clamp pmtu read back as %d\n%s", m0, b)
	}
	if m1, _ := mssClamp(c.Interfaces[1].MSSClamp); m1 != 1300 {
		t.Errorf("mss_clamp 1300 read back as %d\n%s", m1, b)
	}
}

// renderAndLoad renders in as the lab does and loads it as swanpathd
// does; it returns the loaded config and the rendered text.
func renderAndLoad(t *testing.T, in swanpathdconf.Config) (Config, []byte) {
	t.Helper()
	b, err := in.Render("render_test")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "swanpathd.toml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(p)
	if err != nil {
		t.Fatalf("swanpathd refuses what swanpathdconf renders: %v\n%s", err, b)
	}
	return c, b
}
