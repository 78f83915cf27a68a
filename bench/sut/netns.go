// Package sut runs the systems under test of the benchmark: swanpathd in a
// network namespace of its own (a lab host; ports on in-memory DPDK
// devices, SAs installed over the plugin socket as charon would), and
// helpers shared with the other DPDK programs (process groups, counters
// sampled over fixed windows).
package sut

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/swanpath/swanpath/lab"
)

// nsPrefix names the benchmark's namespaces: spbench-<pid>-<n>. The pid is
// the owner's: RemoveStale deletes those whose owner is gone. The lab's
// own stale-namespace sweep (sp + 6 hex digits) never matches these.
const nsPrefix = "spbench-"

var nsSeq int

// newNetns creates a fresh namespace host with lo up and IPv6 off
// (nothing but the benchmark's frames reach the TAPs).
func newNetns(ctx context.Context) (*lab.NS, error) {
	nsSeq++
	n, err := lab.NewNS(ctx, fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsSeq))
	if err != nil {
		return nil, err
	}
	for _, key := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := n.Sysctl(ctx, key, "1"); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
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
		_ = (&lab.NS{Name: e.Name()}).Close()
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
