package pkgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// container is a root booted with systemd as init by systemd-nspawn in a
// network namespace of the lab. This machine's PID 1 is not systemd, so
// nspawn neither registers the machine nor makes a scope (--register=no
// --keep-unit).
type container struct {
	t      testing.TB
	cmd    *exec.Cmd
	leader int // the container's systemd, as the host sees it
	mu     sync.Mutex
	out    bytes.Buffer
	done   chan struct{}
}

func (c *container) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func boot(t testing.TB, ctx context.Context, root, netns string) *container {
	t.Helper()
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Skip("systemd-nspawn not installed (apt-get install systemd-container)")
	}
	c := &container{t: t, done: make(chan struct{})}
	c.cmd = exec.Command("systemd-nspawn", "-D", root, "--register=no", "--keep-unit", "-b",
		"--network-namespace-path=/run/netns/"+netns, "--capability=all",
		"--bind=/dev/net/tun", "--bind=/dev/hugepages",
		// EAL looks for kernel modules (vfio) in /sys/module, which the
		// container's own sysfs lacks
		"--bind-ro=/sys/module", "--console=pipe", "--quiet")
	c.cmd.Stdout, c.cmd.Stderr = c, c
	// /proc/sys/net writable as with --private-network (swanpathd switches
	// IPv6 off on the ports it takes)
	c.cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network")
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.stop)
	deadline := time.Now().Add(60 * time.Second)
	for c.leader == 0 {
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(c.cmd.Process.Pid)).Output()
		if f := strings.Fields(string(out)); len(f) > 0 {
			c.leader, _ = strconv.Atoi(f[0])
		}
		select {
		case <-c.done:
			t.Fatalf("systemd-nspawn exited:\n%s", c.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container leader:\n%s", c.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// multi-user.target reached (or degraded: something else failed)
	for {
		out, _ := c.exec(ctx, "systemctl", "is-system-running")
		if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("container not up (%q):\n%s", out, c.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *container) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return tail(c.out.String(), 40)
}

// exec runs a command inside the container (all its namespaces).
func (c *container) exec(ctx context.Context, args ...string) (string, error) {
	a := append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", a...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "SYSTEMD_PAGER=", "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, tail(string(out), 20))
	}
	return string(out), nil
}

func (c *container) must(t testing.TB, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := c.exec(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stop shuts the container down (nspawn turns SIGTERM into systemd's
// halt), then kills it if that takes too long.
func (c *container) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// mainPID is a unit's main process as the host sees it (0 if none).
func (c *container) mainPID(ctx context.Context, unit string) int {
	out, _ := c.exec(ctx, "systemctl", "show", "-p", "MainPID", "--value", unit)
	inner, _ := strconv.Atoi(strings.TrimSpace(out))
	if inner == 0 {
		return 0
	}
	// NSpid: <host pid> <container pid>
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "NSpid:" && f[2] == strconv.Itoa(inner) && c.inside(pid) {
				return pid
			}
		}
	}
	return 0
}

// inside says whether host pid runs in the container's PID namespace.
func (c *container) inside(pid int) bool {
	a, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	b, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.leader))
	return err1 == nil && err2 == nil && a == b
}
