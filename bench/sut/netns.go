// Package sut runs the systems under test of the benchmark: swanpathd in a
// network namespace of its own (ports on in-memory DPDK devices, SAs
// installed over the plugin socket as charon would), and helpers shared
// with the other DPDK programs (process groups, counters sampled over
// fixed windows).
package sut

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nsPrefix names the benchmark's namespaces: spbench-<pid>-<n>. The pid is
// the owner's: RemoveStale deletes those whose owner is gone. The lab's
// own stale-namespace sweep (sp + 6 hex digits) never matches these.
const nsPrefix = "spbench-"

// Netns is a network namespace the benchmark created.
type Netns struct {
	Name string
}

var nsSeq int

// NewNetns creates a fresh namespace with lo up and IPv6 off (nothing but
// the benchmark's frames reach the TAPs).
func NewNetns(ctx context.Context) (*Netns, error) {
	nsSeq++
	n := &Netns{Name: fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsSeq)}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", n.Name, err, out)
	}
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"},
		{"sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"},
	} {
		if _, err := n.Exec(ctx, args...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// Command is args run inside the namespace, in a process group of its
// own (Stop reaches its children) that dies with the benchmark.
func (n *Netns) Command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", n.Name}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Exec runs args in the namespace; the error carries stderr.
func (n *Netns) Exec(ctx context.Context, args ...string) (string, error) {
	cmd := n.Command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %s: %w: %s", n.Name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Close kills what still runs in the namespace and deletes it.
func (n *Netns) Close() error {
	killNetns(n.Name)
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", n.Name, err, out)
	}
	return nil
}

func killNetns(name string) {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// give the kernel a moment to reap before the namespace goes
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		if len(bytes.TrimSpace(out)) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RemoveStale deletes the namespaces of benchmark runs whose process is
// gone (killed before it could clean up).
func RemoveStale() {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		killNetns(e.Name())
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}
