package lab

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestLibreswanKernelHost: a gateway kernel host with the libreswan root
// boots, reaches this machine's files read-only under UMLHostDir, loads
// XFRM and ESP, and pluto 4.10 starts on the kernel's XFRM.
func TestLibreswanKernelHost(t *testing.T) {
	if why := UMLAvailable(); why != "" {
		t.Skip(why)
	}
	if testing.Short() {
		t.Skip("lab: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	t0 := time.Now()
	root, err := LibreswanRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("libreswan root %s (%v)", root, time.Since(t0).Round(time.Second))
	l := New(t, Options{KernelGatewayRoot: root})
	u := l.Host(GW).(*UML)
	t.Logf("booted in %v", u.BootTime())
	if out, err := u.Exec(ctx, "cat", u.HostPath("/etc/hostname")); err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("this machine's files under %s: %q %v", UMLHostDir, out, err)
	}
	if _, err := u.Exec(ctx, "touch", u.HostPath("/tmp/swanpath-lab-ro-check")); err == nil {
		t.Fatal("the instance can write to this machine's root")
	}
	if _, err := u.Exec(ctx, "touch", "/usr/swanpath-lab-ro-check"); err == nil {
		t.Fatal("the instance can write to its root")
	}
	if _, err := u.Exec(ctx, "test", "-c", "/dev/net/tun"); err != nil {
		t.Fatal("no /dev/net/tun inside")
	}
	p, err := l.StartPluto(ctx, GW, LibreswanConn{})
	if err != nil {
		t.Fatal(err)
	}
	if err := PollFor(ctx, "pluto on XFRM", 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		return strings.Contains(p.Output(), "using Linux xfrm kernel support"), nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, p.Output())
	}
	if out, err := p.Ipsec(ctx, "--version"); err != nil || !strings.Contains(out, "4.10") {
		t.Fatalf("ipsec --version: %q %v", out, err)
	}
}
