package xfrm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// The policy side against this machine's own kernel XFRM, in a fresh
// network namespace (its kernel has no ESP, so no states: the SA side runs
// on a kernel host with ESP).

func ipns(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestKernelPolicyBypass(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
	name := fmt.Sprintf("swx%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	// a stale bypass policy of an "earlier run", and the daemon's policies
	ipns(t, name, "xfrm", "policy", "add", "src", "10.7.0.0/16", "dst", "10.8.0.0/16", "dir", "out",
		"priority", "5", "mark", "1", "mask", "1")
	ipns(t, name, "xfrm", "policy", "add", "src", "10.1.0.0/16", "dst", "10.2.0.0/16", "dir", "out",
		"priority", "1000", "tmpl", "src", "192.0.2.1", "dst", "198.51.100.2", "proto", "esp", "reqid", "7", "mode", "tunnel")
	ipns(t, name, "xfrm", "policy", "add", "src", "10.2.0.0/16", "dst", "10.1.0.0/16", "dir", "fwd",
		"priority", "1000", "tmpl", "src", "198.51.100.2", "dst", "192.0.2.1", "proto", "esp", "reqid", "7", "mode", "tunnel")

	// the gateway's own traffic for the protected selector: out of v0
	// (the TAP's stand-in) to a next hop with a static neighbour
	for _, args := range [][]string{
		{"netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"},
		{"netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"},
		{"-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"-n", name, "addr", "add", "10.1.0.1/24", "dev", "v0"},
		{"-n", name, "link", "set", "v0", "up"},
		{"-n", name, "link", "set", "v1", "up"},
		{"-n", name, "neigh", "add", "10.1.0.2", "lladdr", "02:00:00:00:00:02", "dev", "v0"},
		{"-n", name, "route", "add", "10.2.0.0/16", "via", "10.1.0.2"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	rx := func() int {
		out, err := exec.Command("ip", "netns", "exec", name, "cat", "/sys/class/net/v1/statistics/rx_packets").Output()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		fmt.Sscan(string(out), &n)
		return n
	}
	ping := func() int {
		before := rx()
		_ = exec.Command("ip", "netns", "exec", name, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", "10.1.0.1", "10.2.0.5").Run()
		return rx() - before
	}
	// without swanpathd, the kernel's policy holds them for an SA (and
	// would encrypt them with one)
	if n := ping(); n != 0 {
		t.Fatalf("%d packets left in clear before the mirror ran", n)
	}

	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	dial := func() (Conn, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return nil, err
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			return nil, err
		}
		defer netns.Set(orig)
		return Dial()
	}
	eng := newFakeEngine()
	m := New(Config{Engine: eng, Dial: dial, Local: isGW,
		Stats: func(model.SAID) (dataplane.SACounters, bool) { return dataplane.SACounters{}, false }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case r := <-eng.replayed:
		if r != [2]uint32{2, 0} {
			t.Fatalf("replay %+v", r)
		}
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("no replay")
	}
	pols := ipns(t, name, "xfrm", "policy", "list")
	// the daemon's two, the global pairs at priority 0, and no pair of
	// the daemon's policies' own (it would break the daemon's MIGRATE)
	for _, want := range []string{
		"src 10.1.0.0/16 dst 10.2.0.0/16 \n\tdir out priority 1000",
		"src 10.2.0.0/16 dst 10.1.0.0/16 \n\tdir fwd priority 1000",
	} {
		if !strings.Contains(pols, want) {
			t.Errorf("missing %q in\n%s", want, pols)
		}
	}
	if n := strings.Count(pols, "priority 0 "); n != 12 {
		t.Errorf("%d global bypass policies, want 12:\n%s", n, pols)
	}
	if n := strings.Count(pols, "priority 999"); n != 0 {
		t.Errorf("%d bypass policies of the daemon's policies' own, want none:\n%s", n, pols)
	}
	if strings.Contains(pols, "10.7.0.0/16") {
		t.Errorf("stale bypass policy left:\n%s", pols)
	}
	// now they leave in clear into the interface, for the fast path
	if n := ping(); n != 3 {
		t.Errorf("%d of 3 packets of the gateway's own left in clear with the bypass", n)
	}
	// the daemon removes its out policy: the bypass pair goes with it
	ipns(t, name, "xfrm", "policy", "delete", "src", "10.1.0.0/16", "dst", "10.2.0.0/16", "dir", "out")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pols = ipns(t, name, "xfrm", "policy", "list")
		if !strings.Contains(pols, "dst 10.2.0.0/16") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(pols, "dst 10.2.0.0/16") {
		t.Fatalf("policies left after the daemon's policy went:\n%s", pols)
	}
	// the mirror follows the kernel's delete a moment after the kernel
	// lists it gone
	deadline = time.Now().Add(5 * time.Second)
	_, _, refs := eng.snapshot()
	for len(refs) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		_, _, refs = eng.snapshot()
	}
	if len(refs) != 1 {
		t.Errorf("engine has %d policies, want 1", len(refs))
	}
	// a flush takes the global pairs too: they come back at once
	ipns(t, name, "xfrm", "policy", "flush")
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pols = ipns(t, name, "xfrm", "policy", "list")
		if strings.Count(pols, "priority 0 ") == 12 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(pols, "priority 0 "); n != 12 {
		t.Fatalf("%d global bypass policies after a flush, want 12:\n%s", n, pols)
	}
	t.Logf("kernel policies:\n%s", pols)
}
