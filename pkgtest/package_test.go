package pkgtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// buildDebs builds the package from this tree (make deb) and a copy of it
// with a higher version, for the upgrade: the same files under another
// version run the maintainer scripts an upgrade runs.
func buildDebs(t *testing.T, ctx context.Context) (cur, next string) {
	top := repoRoot(t)
	start := time.Now()
	out := run(t, ctx, "make", "-C", top, "deb")
	m := regexp.MustCompile(`deb: (build/swanpath_(\S+)_amd64\.deb)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("make deb named no package:\n%s", tail(out, 20))
	}
	t.Logf("make deb: %s in %s", m[1], time.Since(start).Round(time.Second))
	cur = filepath.Join(top, m[1])
	if out, err := exec.CommandContext(ctx, "lintian", "--fail-on", "error", cur).CombinedOutput(); err != nil {
		t.Errorf("lintian %s: %v\n%s", m[1], err, out)
	}
	dir := t.TempDir()
	run(t, ctx, "dpkg-deb", "-R", cur, filepath.Join(dir, "x"))
	ctl := filepath.Join(dir, "x", "DEBIAN", "control")
	data, err := os.ReadFile(ctl)
	if err != nil {
		t.Fatal(err)
	}
	v2 := m[2] + "+pkgtest1"
	data = regexp.MustCompile(`(?m)^Version: .*$`).ReplaceAll(data, []byte("Version: "+v2))
	if err := os.WriteFile(ctl, data, 0o644); err != nil {
		t.Fatal(err)
	}
	next = filepath.Join(dir, "swanpath_"+v2+"_amd64.deb")
	run(t, ctx, "dpkg-deb", "--root-owner-group", "-b", filepath.Join(dir, "x"), next)
	return cur, next
}

const gwConf = `[eal]
lcores = "0,1"
memory = 256
file_prefix = "swanpath"
in_memory = true

[[port]]
name = "lan"
device = "net_af_packet0,iface=lan"
tap = "tlan"

[[port]]
name = "wan"
device = "net_af_packet1,iface=wan"
tap = "twan"

[fastpath]
idle_sleep_us = 20

[log]
level = "info"
`

// TestPackage: apt install into a fresh Debian 12 root, then that root
// booted with systemd as gateway of a lab against a kernel-libipsec peer:
// READY, a tunnel through the installed plugin, journald fields, the
// watchdog restarting a stalled swanpathd, an upgrade under traffic, both
// without renegotiation, and a purge that leaves the gateway as before.
func TestPackage(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root, mmdebstrap, systemd-nspawn and the network (apt)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cur, next := buildDebs(t, ctx)
	root := freshRoot(t, ctx)

	// apt install ./swanpath_*.deb pulls every dependency
	if err := exec.Command("cp", cur, next, filepath.Join(root, "root")).Run(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	inChroot(t, ctx, root, "apt-get update -q >/dev/null && apt-get install -y -q /root/"+filepath.Base(cur)+" charon-systemd strongswan-swanctl libstrongswan-standard-plugins")
	t.Logf("apt install in the fresh root: %s", time.Since(start).Round(time.Second))
	for _, f := range []string{"usr/sbin/swanpathd", "usr/bin/swanpathctl", "usr/lib/ipsec/plugins/libstrongswan-kernel-swanpath.so",
		"etc/swanpath/swanpathd.toml", "lib/systemd/system/swanpathd.service"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed package lacks /%s", f)
		}
	}
	snippet := filepath.Join(root, "etc/strongswan.d/charon/kernel-swanpath.conf")
	if data, err := os.ReadFile(snippet); err != nil || !regexp.MustCompile(`(?m)^\s*load = no$`).Match(data) {
		t.Errorf("the plugin's snippet is not shipped switched off (load = no): %v\n%s", err, data)
	}

	// the lab: the container is the gateway (its namespace), pr the peer
	l := lab.New(t, lab.Options{})
	gwNS := l.NS(lab.GW).Name
	tun := lab.Tunnel{}
	before := snapshot(t, ctx, gwNS)

	// choosing swanpath: a configuration, the plugin on, the unit enabled
	if err := os.WriteFile(filepath.Join(root, "etc/swanpath/swanpathd.toml"), []byte(gwConf), 0o644); err != nil {
		t.Fatal(err)
	}
	inChroot(t, ctx, root, `sed -i 's/^\(\s*load = \)no$/\1yes/' /etc/strongswan.d/charon/kernel-swanpath.conf
systemctl enable swanpathd.service >/dev/null 2>&1
systemctl disable strongswan.service >/dev/null 2>&1 || true`)
	if err := os.WriteFile(filepath.Join(root, "etc/swanctl/conf.d/lab.conf"), []byte(tun.GatewayConf()), 0o600); err != nil {
		t.Fatal(err)
	}
	pr, err := l.StartPeer(ctx, tun)
	if err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	c := boot(t, ctx, root, gwNS)
	t.Logf("container booted in %s", time.Since(start).Round(100*time.Millisecond))
	waitActive(t, ctx, c, "swanpathd.service")
	t.Logf("swanpathd.service READY %s after boot began", time.Since(start).Round(100*time.Millisecond))
	waitStatus(t, ctx, c, regexp.MustCompile(`^fast path closed: waiting for charon's replay`))
	if err := l.ConfigureGateway(lab.GWLanTap, lab.GWWanTap); err != nil {
		t.Fatal(err)
	}
	c.must(t, ctx, "systemctl", "start", "strongswan.service")
	c.must(t, ctx, "swanctl", "--initiate", "--child", lab.ChildName, "--timeout", "20")
	if _, err := pr.WaitEstablished(ctx, lab.ChildName); err != nil {
		t.Fatal(err)
	}
	ping(t, ctx, l, "through the tunnel")
	spis := childSPIs(t, ctx, pr)
	waitStatus(t, ctx, c, regexp.MustCompile(`^forwarding: 2 SAs, \d+ policies$`))

	t.Run("journal", func(t *testing.T) {
		out := strings.TrimSpace(c.must(t, ctx, "journalctl", "-u", "swanpathd", "-o", "json", "--no-pager", "SPI="+spiField(spis[0])))
		if out == "" {
			t.Fatalf("journalctl -u swanpathd SPI=%s: nothing\n%s", spiField(spis[0]), c.must(t, ctx, "journalctl", "-u", "swanpathd", "--no-pager"))
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &e); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"SPI", "DIR", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT"} {
			if e[k] == nil {
				t.Errorf("entry without %s: %v", k, e)
			}
		}
	})

	// A stalled worker is a crash: systemd's watchdog kills swanpathd
	// (SIGABRT), so the inbound SAs charon replays may have received
	// packets after the last checkpoint that an attacker could replay.
	// The IKE_SA stays; charon's plugin replays the SAs at once (traffic
	// goes on) and swanpathd asks charon to rekey the CHILD_SA
	// (make-before-break), as issue 18 wants after every crash.
	t.Run("watchdog", func(t *testing.T) {
		ikeBefore := ikeID(t, ctx, pr)
		old := c.mainPID(ctx, "swanpathd.service")
		stallWorker(t, old)
		start := time.Now()
		waitRestart(t, ctx, c, old, 40*time.Second)
		t.Logf("stalled worker: swanpathd restarted after %s", time.Since(start).Round(100*time.Millisecond))
		ping(t, ctx, l, "after the watchdog restart")
		var got []string
		err := lab.PollFor(ctx, "the CHILD_SA rekeyed after the crash", 60*time.Second, 200*time.Millisecond, func() (bool, error) {
			var err error
			if got, err = peerSPIs(ctx, pr); err != nil {
				return false, err
			}
			return !equal(got, spis) && !slices.Contains(got, spis[0]) && !slices.Contains(got, spis[1]),
				fmt.Errorf("peer's CHILD_SA SPIs %v, were %v", got, spis)
		})
		if err != nil {
			t.Fatalf("%v; swanpathd's journal:\n%s", err, tail(c.must(t, ctx, "journalctl", "-u", "swanpathd", "--no-pager"), 40))
		}
		spis = got
		if id := ikeID(t, ctx, pr); id != ikeBefore {
			t.Errorf("IKE_SA renegotiated: #%s, was #%s", id, ikeBefore)
		}
		ping(t, ctx, l, "after the rekey")
		j := c.must(t, ctx, "journalctl", "-u", "swanpathd", "--no-pager")
		for _, want := range []string{"makes no progress", "atchdog", "replayed after a crash"} {
			if !strings.Contains(j, want) {
				t.Errorf("the journal does not say %q:\n%s", want, tail(j, 30))
			}
		}
	})

	t.Run("upgrade", func(t *testing.T) {
		old := c.mainPID(ctx, "swanpathd.service")
		pctx, pcancel := context.WithCancel(ctx)
		defer pcancel()
		// traffic throughout (ping keeps going; the check is after)
		go func() { _, _ = l.NS(lab.H1).Exec(pctx, "ping", "-q", "-i", "0.2", "-w", "30", lab.H2Addr) }()
		start := time.Now()
		c.must(t, ctx, "dpkg", "-i", "/root/"+filepath.Base(next))
		waitRestart(t, ctx, c, old, 30*time.Second)
		t.Logf("upgrade: dpkg -i and restart in %s", time.Since(start).Round(100*time.Millisecond))
		if v := c.must(t, ctx, "dpkg-query", "-W", "-f", "${Version}", "swanpath"); !strings.HasSuffix(v, "+pkgtest1") {
			t.Errorf("installed version %q after the upgrade", v)
		}
		ping(t, ctx, l, "after the upgrade")
		if got := childSPIs(t, ctx, pr); !equal(got, spis) {
			t.Errorf("CHILD_SA renegotiated: SPIs %v, were %v", got, spis)
		}
	})

	t.Run("purge", func(t *testing.T) {
		c.must(t, ctx, "systemctl", "stop", "strongswan.service")
		c.must(t, ctx, "apt-get", "purge", "-y", "-q", "swanpath")
		after := snapshot(t, ctx, gwNS)
		if after != before {
			t.Errorf("gateway namespace after purge:\n%s\nbefore swanpath:\n%s", after, before)
		}
		for _, p := range []string{"run/swanpath", "etc/swanpath", "var/run/dpdk/swanpath"} {
			if _, err := c.exec(ctx, "test", "!", "-e", "/"+p); err != nil {
				t.Errorf("/%s is still there after purge", p)
			}
		}
		if out := c.must(t, ctx, "sh", "-c", "ls -A /dev/hugepages"); strings.TrimSpace(out) != "" {
			t.Errorf("/dev/hugepages after purge: %s", out)
		}
	})
}

// snapshot is what swanpath may change in the gateway's namespace: the
// interfaces and the nftables ruleset.
func snapshot(t *testing.T, ctx context.Context, ns string) string {
	links := run(t, ctx, "ip", "-n", ns, "-o", "link", "show")
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	sort.Strings(names)
	nft := run(t, ctx, "ip", "netns", "exec", ns, "nft", "list", "tables")
	return "links: " + strings.Join(names, " ") + "\nnftables: " + strings.TrimSpace(nft)
}

func waitActive(t *testing.T, ctx context.Context, c *container, unit string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := c.exec(ctx, "systemctl", "is-active", unit)
		if strings.TrimSpace(out) == "active" {
			return
		}
		if time.Now().After(deadline) {
			j, _ := c.exec(ctx, "journalctl", "-u", unit, "--no-pager")
			t.Fatalf("%s not active (%s):\n%s", unit, strings.TrimSpace(out), tail(j, 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitStatus(t *testing.T, ctx context.Context, c *container, want *regexp.Regexp) {
	t.Helper()
	var st string
	for i := 0; i < 50; i++ {
		st = strings.TrimSpace(c.must(t, ctx, "systemctl", "show", "-p", "StatusText", "--value", "swanpathd.service"))
		if want.MatchString(st) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("STATUS %q, want %q", st, want)
}

// waitRestart waits until swanpathd.service is active again with a main
// process other than old.
func waitRestart(t *testing.T, ctx context.Context, c *container, old int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if pid := c.mainPID(ctx, "swanpathd.service"); pid != 0 && pid != old {
			waitActive(t, ctx, c, "swanpathd.service")
			return
		}
		if time.Now().After(deadline) {
			j, _ := c.exec(ctx, "journalctl", "-u", "swanpathd", "--no-pager")
			t.Fatalf("swanpathd (pid %d) not restarted within %s:\n%s", old, within, tail(j, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ping passes traffic h1 -> h2 through the tunnel; the first packets may
// meet a fast path that waits for charon's replay.
func ping(t *testing.T, ctx context.Context, l *lab.Lab, when string) {
	t.Helper()
	var err error
	for i := 0; i < 10; i++ {
		if err = l.Ping(ctx, lab.H1, lab.H2Addr, 3); err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("ping %s: %v", when, err)
}

// ikeID is the unique id of the peer's one IKE_SA.
func ikeID(t *testing.T, ctx context.Context, pr *lab.Charon) string {
	t.Helper()
	sas, err := pr.ListSAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 1 {
		t.Fatalf("peer has %d IKE_SAs, want one", len(sas))
	}
	return sas[0].UniqueID
}

func childSPIs(t *testing.T, ctx context.Context, pr *lab.Charon) []string {
	t.Helper()
	out, err := peerSPIs(ctx, pr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// peerSPIs are the SPIs of the peer's one CHILD_SA, sorted; an error when
// there is not exactly one.
func peerSPIs(ctx context.Context, pr *lab.Charon) ([]string, error) {
	sas, err := pr.ListSAs(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ike := range sas {
		for _, ch := range ike.Children {
			out = append(out, ch.SPIIn, ch.SPIOut)
		}
	}
	sort.Strings(out)
	if len(out) != 2 {
		return out, fmt.Errorf("peer has CHILD_SA SPIs %v, want one pair", out)
	}
	return out, nil
}

// spiField is the journal's SPI field for a SPI charon prints in hex.
func spiField(hexSPI string) string {
	var v uint32
	_, _ = fmt.Sscanf(hexSPI, "%x", &v)
	return fmt.Sprintf("0x%08x", v)
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }
