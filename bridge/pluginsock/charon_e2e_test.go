package pluginsock

// End-to-end: a real charon with the kernel-swanpath plugin (installed by
// `make -C charon install`) talks to this package's Server with the
// in-memory fake Handler, and negotiates with a second charon using
// kernel-libipsec, each in its own network namespace (prefix "pl-").

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

const pluginSO = "/usr/lib/ipsec/plugins/libstrongswan-kernel-swanpath.so"

// pluginBuild is the plugin charon loads in these tests: this tree's build
// (`make -C charon all`) if there is one, bind-mounted over the installed
// plugin inside charon's own mount namespace (the installed file is shared
// by everyone on the machine), else the installed one ("").
func pluginBuild(t *testing.T) string {
	p, err := filepath.Abs("../../build/libstrongswan-kernel-swanpath.so")
	if err != nil {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		t.Logf("charon loads the installed plugin %s (no %s)", pluginSO, p)
		return ""
	}
	t.Logf("charon loads this tree's plugin %s", p)
	return p
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type testCharon struct {
	name, ns, dir string
	cmd           *exec.Cmd
	done          chan struct{}
}

func (c *testCharon) conf() string { return filepath.Join(c.dir, "strongswan.conf") }
func (c *testCharon) vici() string { return filepath.Join(c.dir, "charon.vici") }
func (c *testCharon) log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "charon.log"))
	return string(b)
}
func (c *testCharon) swanctl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{args[0], "--uri", "unix://" + c.vici()}, args[1:]...)
	cmd := exec.CommandContext(ctx, "swanctl", full...)
	cmd.Env = append(os.Environ(), "SWANCTL_DIR="+c.dir, "STRONGSWAN_CONF="+c.conf())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func startCharon(t *testing.T, name, ns, kernelPlugin, pluginSettings, swanctlConf string) *testCharon {
	t.Helper()
	c := &testCharon{name: name, ns: ns, dir: filepath.Join(t.TempDir(), name), done: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(c.dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	plugins := []string{"random", "nonce", "openssl", "aes", "sha1", "sha2", "hmac", "gcm", "kdf",
		"pem", "pkcs1", "pubkey", "x509", "socket-default", "kernel-netlink"}
	var b strings.Builder
	fmt.Fprintf(&b, "charon {\n\tload_modular = yes\n\tfilelog {\n\t\tt {\n\t\t\tpath = %s\n\t\t\tdefault = 1\n\t\t\tknl = 2\n\t\t\tflush_line = yes\n\t\t}\n\t}\n",
		filepath.Join(c.dir, "charon.log"))
	b.WriteString("\tsyslog {\n\t\tdaemon {\n\t\t\tdefault = -1\n\t\t}\n\t}\n\tplugins {\n")
	for _, p := range plugins {
		fmt.Fprintf(&b, "\t\t%s {\n\t\t\tload = yes\n\t\t}\n", p)
	}
	fmt.Fprintf(&b, "\t\tvici {\n\t\t\tload = yes\n\t\t\tsocket = unix://%s\n\t\t}\n", c.vici())
	fmt.Fprintf(&b, "\t\t%s {\n\t\t\tload = yes\n\t\t\t%s\n\t\t}\n\t}\n}\n", kernelPlugin, pluginSettings)
	b.WriteString("swanctl {\n\tload = random nonce openssl pem pkcs1 pkcs8 x509 pubkey\n}\n")
	if err := os.WriteFile(c.conf(), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "swanctl.conf"), []byte(swanctlConf), 0o600); err != nil {
		t.Fatal(err)
	}
	// A private /run: Debian's charon hard-codes /var/run/charon.pid.
	c.cmd = exec.Command("ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
		"sh", "-c", `mount --rbind "$1" /run && { [ -z "$2" ] || mount --bind "$2" "$3"; } && exec /usr/lib/ipsec/charon`,
		"sh", filepath.Join(c.dir, "run"), pluginBuild(t), pluginSO)
	c.cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+c.conf())
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", c.name, c.log())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	poll(t, ctx, name+" VICI socket", func() bool {
		_, err := c.swanctl(ctx, "--stats")
		return err == nil
	})
	if out, err := c.swanctl(ctx, "--load-all", "--noprompt"); err != nil {
		t.Fatalf("%s: swanctl --load-all: %v\n%s", name, err, out)
	}
	return c
}

// poll checks cond every 50 ms until it holds (polling a condition, not
// sleeping for a guessed time).
func poll(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func swanctlConf(local, remote, localTS, remoteTS string) string {
	return fmt.Sprintf(`connections {
	pl {
		version = 2
		local_addrs = %s
		remote_addrs = %s
		proposals = aes128-sha256-modp2048
		local { auth = psk
			id = %s }
		remote { auth = psk
			id = %s }
		children {
			net {
				local_ts = %s
				remote_ts = %s
				esp_proposals = aes128gcm16
				mode = tunnel
			}
		}
	}
}
secrets {
	ike-pl { secret = swanpath-test-psk }
}
`, local, remote, local, remote, localTS, remoteTS)
}

func TestCharonPluginEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with real charons")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, charon)")
	}
	if _, err := os.Stat(pluginSO); err != nil {
		t.Skipf("plugin not installed (make -C charon install): %v", err)
	}
	rnd := make([]byte, 3)
	rand.Read(rnd)
	id := hex.EncodeToString(rnd)
	nsA, nsB := "pl-"+id+"-gw", "pl-"+id+"-peer"
	vethA, vethB := "pla"+id, "plb"+id

	// The plugin's socket server with the fake handler.
	sock := filepath.Join(t.TempDir(), "run", "charon.sock") // run: 0700, made by Listen
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fake := newFakeHandler()
	srv, err := Listen(context.Background(), log, sock, fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	for _, ns := range []string{nsA, nsB} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", vethA, "netns", nsA, "type", "veth", "peer", "name", vethB, "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", "192.0.2.1/24", "dev", vethA)
	run(t, "ip", "-n", nsB, "addr", "add", "192.0.2.2/24", "dev", vethB)
	// kernel-libipsec routes into the tunnel from an address inside its
	// local traffic selector (no dummy links here: /32 on lo).
	run(t, "ip", "-n", nsA, "addr", "add", "10.1.0.1/32", "dev", "lo")
	run(t, "ip", "-n", nsB, "addr", "add", "10.2.0.1/32", "dev", "lo")
	run(t, "ip", "-n", nsA, "link", "set", vethA, "up")
	run(t, "ip", "-n", nsB, "link", "set", vethB, "up")

	gw := startCharon(t, "gw", nsA, "kernel-swanpath", "socket = "+sock,
		swanctlConf("192.0.2.1", "192.0.2.2", "10.1.0.0/24", "10.2.0.0/24"))
	peer := startCharon(t, "peer", nsB, "kernel-libipsec", "",
		swanctlConf("192.0.2.2", "192.0.2.1", "10.2.0.0/24", "10.1.0.0/24"))
	_ = peer

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := gw.swanctl(ctx, "--initiate", "--child", "net", "--timeout", "30"); err != nil {
		t.Fatalf("initiate: %v\n%s", err, out)
	}

	// Two SAs and the out/in/fwd policies reached the fake.
	installed := func(f *fakeHandler) bool {
		dirs := map[model.Dir]bool{}
		for p := range f.mu.policies {
			dirs[p.Dir] = true
		}
		return len(f.mu.sas) == 2 && dirs[model.DirOut] && dirs[model.DirIn] && dirs[model.DirFwd]
	}
	if err := fake.waitFor(ctx, installed); err != nil {
		t.Fatalf("SAs and policies not installed: %v\ncalls: %q", err, fake.calls())
	}
	fake.mu.Lock()
	sas := map[model.SAID]model.SA{}
	for k, sa := range fake.mu.sas {
		sas[k] = sa
		t.Logf("SA %s src=%s inbound=%v mode=%s reqid=%d encap=%v ports=%d/%d enc=%d key=%s icv=%d replay=%d soft=%+v hard=%+v",
			sa.SAID, sa.Src, sa.Inbound, sa.Mode, sa.Reqid, sa.Encap, sa.SrcPort, sa.DstPort, sa.EncAlg, sa.EncKey, sa.ICVLen, sa.ReplayWindow, sa.Soft, sa.Hard)
		if sa.EncAlg != model.EncrAESGCM16 || len(sa.EncKey) != 20 || sa.ICVLen != 16 || sa.Mode != model.ModeTunnel {
			t.Errorf("SA %s: enc %d key %d bytes icv %d mode %s; want AES-GCM-16, 20-byte key incl. salt, ICV 16, tunnel",
				sa.SAID, sa.EncAlg, len(sa.EncKey), sa.ICVLen, sa.Mode)
		}
		// kernel-libipsec requires UDP encapsulation, so both SAs use it.
		if !sa.Encap || sa.SrcPort != 4500 || sa.DstPort != 4500 {
			t.Errorf("SA %s: encap %v ports %d/%d; want ESP-in-UDP 4500/4500", sa.SAID, sa.Encap, sa.SrcPort, sa.DstPort)
		}
		if sa.Hard.Time == 0 || sa.Soft.Time == 0 || sa.Soft.Time >= sa.Hard.Time {
			t.Errorf("SA %s: lifetimes soft %v hard %v", sa.SAID, sa.Soft.Time, sa.Hard.Time)
		}
	}
	for p, refs := range fake.mu.policies {
		t.Logf("policy %s %s refs=%d", p.Sel, p.Dir, refs)
	}
	nPolicies := len(fake.mu.policies)
	fake.mu.Unlock()
	if calls := strings.Join(fake.calls(), "\n"); !strings.Contains(calls, "GetSPI 192.0.2.2 192.0.2.1 50") {
		t.Errorf("no GET_SPI for the inbound SA:\n%s", calls)
	}

	// query_sa: swanctl --list-sas shows the fake's counters.
	out, err := gw.swanctl(ctx, "--list-sas")
	if err != nil {
		t.Fatalf("list-sas: %v\n%s", err, out)
	}
	t.Logf("gw swanctl --list-sas:\n%s", out)
	if !strings.Contains(out, "123456 bytes") || !strings.Contains(out, "789 packets") {
		t.Errorf("list-sas does not show the counters from swanpathd (123456 bytes, 789 packets)")
	}

	// Restart the server: the plugin reconnects and replays everything.
	srv.Close()
	poll(t, ctx, "unreachable log line", func() bool {
		return strings.Contains(gw.log(), "kernel-swanpath: swanpathd not reachable at "+sock)
	})
	fake2 := newFakeHandler()
	srv2, err := Listen(context.Background(), log, sock, fake2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Close() })
	if err := fake2.waitFor(ctx, func(f *fakeHandler) bool {
		return len(f.mu.sas) == 2 && len(f.mu.policies) == nPolicies
	}); err != nil {
		t.Fatalf("no replay after restart: %v\ncalls: %q", err, fake2.calls())
	}
	fake2.mu.Lock()
	for k, sa := range fake2.mu.sas {
		if want, ok := sas[k]; !ok || string(want.EncKey) != string(sa.EncKey) || want.Encap != sa.Encap {
			t.Errorf("replayed SA %s differs from the original", k)
		}
	}
	fake2.mu.Unlock()
	calls := fake2.calls()
	t.Logf("after restart: %q", calls)
	if len(calls) < 2 || !strings.HasPrefix(calls[0], "AddSA") || !strings.HasPrefix(calls[1], "AddSA") {
		t.Errorf("replay does not start with the SAs: %q", calls)
	}
	poll(t, ctx, "replay line in charon's log", func() bool {
		return strings.Contains(gw.log(), "kernel-swanpath: replayed 2 SAs and 3 policies")
	})

	// A soft EXPIRE from swanpathd makes charon rekey the CHILD_SA: a new
	// SPI and two new SAs arrive.
	var inbound model.SAID
	for k, sa := range sas {
		if sa.Inbound {
			inbound = k
		}
	}
	srv2.Notify(Event{Kind: EventExpire, SA: inbound})
	if err := fake2.waitFor(ctx, func(f *fakeHandler) bool {
		added := 0
		for _, c := range f.mu.calls {
			if strings.HasPrefix(c, "AddSA") {
				added++
			}
		}
		return added >= 4 && len(f.mu.sas) >= 2
	}); err != nil {
		t.Fatalf("no rekey after a soft EXPIRE: %v\ncalls: %q", err, fake2.calls())
	}
	poll(t, ctx, "expire in charon's log", func() bool {
		return strings.Contains(gw.log(), fmt.Sprintf("kernel-swanpath: soft expire for SA with SPI %08x", inbound.SPI))
	})
}
