package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swanpath/swanpath/fastpath"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "swanpathd.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigExampleIsValid(t *testing.T) {
	c, err := loadConfig("../../packaging/swanpathd.toml")
	if err != nil {
		t.Fatalf("shipped example: %v", err)
	}
	if len(c.Ports) != 2 {
		t.Fatalf("example has %d ports, want 2", len(c.Ports))
	}
}

func TestConfigReportsEveryProblem(t *testing.T) {
	p := writeConfig(t, `
bogus = 1
[source]
kind = "racoon"
[crypto]
pmd = "quantum"
[fastpath]
natt_port = 70000
[[port]]
name = "wan"
tap = "this-name-is-far-too-long"
[[port]]
name = "wan"
device = "net_tap9"
tap = "x"
[log]
level = "loud"
[charon]
reconcile_grace = "soon"
[metrics]
listen = "9469"
`)
	_, err := loadConfig(p)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{
		`unknown key "bogus"`, `crypto.pmd "quantum"`, "natt_port 70000",
		`port "wan": device is missing`, "longer than 15", "duplicate name", `log.level "loud"`, `source.kind "racoon"`,
		`charon.reconcile_grace "soon"`, `metrics.listen "9469"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	p := writeConfig(t, `
[[port]]
name = "wan"
device = "net_af_packet0,iface=eth1"
tap = "sp-wan"
`)
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Plugin.Socket != "/run/swanpath/charon.sock" || c.Crypto.PMD != "aesni_gcm" || c.Fastpath.NATTPort != 4500 {
		t.Fatalf("defaults not applied: %+v", c)
	}
	args := strings.Join(c.ealArgs(), " ")
	for _, want := range []string{"-l 0,1", "--file-prefix swanpath", "--in-memory"} {
		if !strings.Contains(args, want) {
			t.Errorf("EAL args %q lack %q", args, want)
		}
	}
}

func TestConfigSourceXFRM(t *testing.T) {
	p := writeConfig(t, `
[source]
kind = "xfrm"
[plugin]
socket = ""
[[port]]
name = "wan"
device = "net_tap0"
tap = "sp-wan"
`)
	c, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Source.Kind != sourceXFRM {
		t.Fatalf("source.kind %q", c.Source.Kind)
	}
	d := defaultConfig()
	d.EAL.Lcores, d.EAL.InMemory, d.EAL.NoHuge = "0@0,1@0", false, true
	if args := strings.Join(d.ealArgs(), " "); !strings.Contains(args, "--lcores 0@0,1@0") || strings.Contains(args, "-l ") ||
		!strings.Contains(args, "--no-huge --no-shconf") || strings.Contains(args, "--in-memory") {
		t.Errorf("lcores mapped on one CPU: EAL args %q", args)
	}
	if d.Source.Kind != sourcePlugin {
		t.Fatalf("default source.kind %q, want plugin", d.Source.Kind)
	}
}

// TestConfigInterfaces: [[interface]] tables are read, and every problem
// with them is named at once.
func TestConfigInterfaces(t *testing.T) {
	good := writeConfig(t, `
[[port]]
name = "wan"
device = "net_tap9"
tap = "twan"
[[interface]]
name = "ipsec0"
if_id = 20
mtu = 1400
mss_clamp = "pmtu"
[[interface]]
name = "vti1"
mark = 21
mss_clamp = 1300
`)
	c, err := loadConfig(good)
	if err != nil {
		t.Fatalf("good interfaces refused: %v", err)
	}
	if len(c.Interfaces) != 2 || c.Interfaces[0].Name != "ipsec0" || c.Interfaces[0].IfID != 20 ||
		c.Interfaces[0].MTU != 1400 || c.Interfaces[1].Mark != 21 {
		t.Fatalf("interfaces read as %+v", c.Interfaces)
	}
	if m0, _ := mssClamp(c.Interfaces[0].MSSClamp); m0 != fastpath.MSSClampPMTU {
		t.Errorf("mss_clamp \"pmtu\" read as %d", m0)
	}
	if m1, _ := mssClamp(c.Interfaces[1].MSSClamp); m1 != 1300 {
		t.Errorf("mss_clamp 1300 read as %d", m1)
	}
	// the XFRM mirror carries route-based SAs too (a libreswan VTI's mark)
	if _, err := loadConfig(writeConfig(t, `
[source]
kind = "xfrm"
[[port]]
name = "wan"
device = "net_tap9"
tap = "twan"
[[interface]]
name = "ipsec0"
mark = 20
`)); err != nil {
		t.Errorf("[[interface]] with source.kind xfrm refused: %v", err)
	}

	bad := writeConfig(t, `
[source]
kind = "xfrm"
[[port]]
name = "wan"
device = "net_tap9"
tap = "twan"
[[interface]]
if_id = 1
[[interface]]
name = "twan"
if_id = 1
[[interface]]
name = "this-name-is-far-too-long"
mark = 3
[[interface]]
name = "ipsec9"
mtu = 100
mss_clamp = "auto"
[[interface]]
name = "ipsec8"
if_id = 8
mss_clamp = 100
[[interface]]
name = "ipsec9"
mark = 3
[[interface]]
name = "a"
if_id = 5
[[interface]]
name = "b"
if_id = 6
[[interface]]
name = "c"
if_id = 7
`)
	_, err = loadConfig(bad)
	if err == nil {
		t.Fatal("bad interfaces accepted")
	}
	for _, want := range []string{
		`interface 1: name is missing`, `interface "twan": name is a port's tap`, `interface "twan": if_id 1 is interface ""'s too`,
		`interface "this-name-is-far-too-long": name is longer than 15`, `interface "ipsec9": neither if_id nor mark`,
		`interface "ipsec9": mtu 100 out of range`, `interface "ipsec9": duplicate name`, `interface "ipsec9": mark 3 is interface "this-name-is-far-too-long"'s too`,
		`1 [[port]] and 9 [[interface]]: at most 8 together`, `interface "ipsec9": mss_clamp auto: want "pmtu"`,
		`interface "ipsec8": mss_clamp 100 out of range`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
