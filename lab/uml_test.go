package lab

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestKernelHost: a lab whose peer is a user-mode-Linux kernel: it boots on
// pr's veths, runs commands, reaches its neighbours both ways on both
// links, has the ESP the host kernel lacks, stops what it started, and is
// gone (with its shell namespace and every process) after Close.
func TestKernelHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := New(t, Options{GatewayAddrs: true, KernelPeer: true})
	u, ok := l.Host(PR).(*UML)
	if !ok {
		t.Fatalf("pr is %T, want a kernel host", l.Host(PR))
	}
	t.Logf("booted in %v", u.BootTime())
	out, err := u.Exec(ctx, "uname", "-r")
	if err != nil || !strings.HasPrefix(out, "6.1") {
		t.Fatalf("uname -r inside: %q %v", out, err)
	}
	if _, err := u.Exec(ctx, "false"); err == nil {
		t.Fatal("a failing command inside returned no error")
	}
	if err := l.Ping(ctx, GW, PRWanAddr, 2); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx, PR, GWWanAddr, 2); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx, H2, PRLanAddr, 2); err != nil {
		t.Fatal(err)
	}
	// the kernel's own ESP, which this machine's kernel has not
	if _, err := u.Exec(ctx, "ip", "xfrm", "state", "add", "src", GWWanAddr, "dst", PRWanAddr, "proto", "esp",
		"spi", "0x100", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x0102030405060708091011121314151617181920", "128"); err != nil {
		t.Fatal(err)
	}
	p, err := u.Start("sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := PollFor(ctx, "sleep runs inside", 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		out, _ := u.Exec(ctx, "pgrep", "-x", "sleep")
		return strings.TrimSpace(out) != "", nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if out, _ := u.Exec(ctx, "pgrep", "-x", "sleep"); strings.TrimSpace(out) != "" {
		t.Fatalf("sleep still runs inside after Stop: %s", out)
	}
	if err := u.WriteFile(ctx, "/run/x/y", []byte("a'b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := u.ReadFile(ctx, "/run/x/y"); err != nil || got != "a'b\n" {
		t.Fatalf("read back %q %v", got, err)
	}
	if _, err := u.Exec(ctx, "touch", "/usr/swanpath-lab-ro-check"); err == nil {
		t.Fatal("the instance can write to the host's root")
	}
	name := u.String()
	l.Close()
	if netnsExists(name) {
		t.Fatalf("shell %s still there after Close", name)
	}
	if out, _ := output(ctx, "pgrep", "-f", "umid="+name); strings.TrimSpace(out) != "" {
		t.Fatalf("linux.uml of %s still runs after Close: %s", name, out)
	}
	if _, err := os.Stat(u.dir + "/console.log"); err != nil {
		t.Fatalf("console not kept: %v", err)
	}
}
