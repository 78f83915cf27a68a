package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// buildTool builds one of the e2e helper programs (e2e/NAME, static) into
// the repository's build/ and returns its path, removed at the end of t.
// A kernel host reaches it through UML.HostPath.
func buildTool(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(repoRoot(), "build", fmt.Sprintf("%s-%d", name, os.Getpid()))
	build := exec.Command("go", "build", "-o", bin, "./e2e/"+name)
	build.Dir, build.Env = repoRoot(), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { os.Remove(bin) })
	return bin
}

// TestXFRMMirrorMigrate: the XFRM mirror follows XFRM_MSG_MIGRATE (what
// libreswan sends for MOBIKE) in a real Linux kernel (a user-mode-Linux
// kernel host): with swanpathd's engine and mirror running there on a
// counting data plane (e2e/xfrmprobe), `ip xfrm` installs an SA pair and
// its policies (at a daemon's usual priorities), then e2e/xfrmmigrate
// moves both policies and SAs to the other end's new address, ESP-in-UDP
// from then on, as the daemon would. The kernel accepts it with
// swanpathd's bypass policies in place (the global pairs do not have the
// daemon's selector; a pair of the policy's own did, and the kernel
// answered ENODATA: this test found it). The kernel's states
// move (it clones them at the new address and deletes the old ones,
// without NEWSA or DELSA notifications); the engine moves its SAs (never
// deleted and added again, which would restart the outbound sequence
// numbers under the same key) and the policies' templates point at the
// new address; the fast path's counters go on into the kernel's SA at its
// new address, above what was written before the move.
func TestXFRMMirrorMigrate(t *testing.T) {
	ctx, l := kernelPeerLab(t)
	u := l.Host(lab.PR).(*lab.UML)
	probe, migrate := buildTool(t, "xfrmprobe"), buildTool(t, "xfrmmigrate")

	const (
		local  = lab.PRWanAddr // the kernel host's own address
		remote = lab.GWWanAddr
		moved  = "192.0.2.9" // the other end's new address
		outKey = "0x3132333435363738393a3b3c3d3e3f4041424344"
		inKey  = "0x5152535455565758595a5b5c5d5e5f6061626364"
	)
	ipx := ipOn(t, ctx, u)
	var p *lab.Proc // the probe, started below
	waitOut := func(what string, re string) []string {
		t.Helper()
		return waitProbe(t, ctx, p, what, re)
	}
	var err error
	p, err = u.Start(u.HostPath(probe), "-secs", "90")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitOut("the fast path opens after the first dump", `closed=false`)
	ipx("xfrm", "state", "add", "src", local, "dst", remote, "proto", "esp", "spi", "0x1001", "reqid", "1", "mode", "tunnel",
		"replay-window", "32", "aead", "rfc4106(gcm(aes))", outKey, "128")
	ipx("xfrm", "state", "add", "src", remote, "dst", local, "proto", "esp", "spi", "0x2001", "reqid", "1", "mode", "tunnel",
		"replay-window", "32", "aead", "rfc4106(gcm(aes))", inKey, "128")
	ipx("xfrm", "policy", "add", "src", "10.9.1.0/24", "dst", "10.9.2.0/24", "dir", "out", "priority", "2000",
		"tmpl", "src", local, "dst", remote, "proto", "esp", "reqid", "1", "mode", "tunnel")
	ipx("xfrm", "policy", "add", "src", "10.9.2.0/24", "dst", "10.9.1.0/24", "dir", "in", "priority", "2000",
		"tmpl", "src", remote, "dst", local, "proto", "esp", "reqid", "1", "mode", "tunnel")
	waitOut("the outbound SA", `SA add spi=0x00001001 dir=out`)
	waitOut("the inbound SA", `SA add spi=0x00002001 dir=in`)
	waitOut("the out policy", `policy (set|bind) sel="src 10.9.1.0/24 dst 10.9.2.0/24"`)

	oseq := func(dst string) (uint64, bool) {
		out, err := u.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", local, "dst", dst, "proto", "esp", "spi", "0x1001")
		if err != nil {
			return 0, false
		}
		k, err := parseKernelSA(out)
		if err != nil {
			return 0, false
		}
		return k.oseq, true
	}
	var before uint64
	if err := lab.PollFor(ctx, "counters in the kernel's outbound SA", 10*time.Second, 100*time.Millisecond, func() (bool, error) {
		var ok bool
		before, ok = oseq(remote)
		return ok && before >= 10, nil
	}); err != nil {
		t.Fatal(err)
	}

	// the other end moved: both directions migrate, ESP-in-UDP from now on
	for _, args := range [][]string{
		{"-sel", "10.9.1.0/24,10.9.2.0/24", "-dir", "out", "-move", strings.Join([]string{local, remote, local, moved, "1"}, ","), "-encap", "4500,4500"},
		{"-sel", "10.9.2.0/24,10.9.1.0/24", "-dir", "in", "-move", strings.Join([]string{remote, local, moved, local, "1"}, ","), "-encap", "4500,4500"},
	} {
		if out, err := u.Exec(ctx, append([]string{u.HostPath(migrate)}, args...)...); err != nil {
			t.Fatalf("xfrmmigrate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// the kernel moved its states (the old ones are gone)
	st := ipx("xfrm", "state")
	if !strings.Contains(st, "src "+local+" dst "+moved) || !strings.Contains(st, "src "+moved+" dst "+local) ||
		strings.Contains(st, "dst "+remote) || !strings.Contains(st, "encap type espinudp sport 4500 dport 4500") {
		t.Fatalf("the kernel did not migrate its states:\n%s", st)
	}
	// the engine moved its SAs and re-pointed the policies
	waitOut("the outbound SA moved", `SA move spi=0x00001001 src=`+local+` dst=`+moved+` encap=true sport=4500 dport=4500`)
	waitOut("the inbound SA moved", `SA move spi=0x00002001 src=`+moved+` dst=`+local+` encap=true sport=4500 dport=4500`)
	waitOut("the out policy's template", `policy set sel="src 10.9.1.0/24 dst 10.9.2.0/24" dir=out .* tmpl=`+local+`->`+moved)
	waitOut("the in policy's template", `policy set sel="src 10.9.2.0/24 dst 10.9.1.0/24" dir=in .* tmpl=`+moved+`->`+local)
	if n := strings.Count(p.Output(), "SA add spi=0x00001001"); n != 1 || strings.Contains(p.Output(), "SA del spi=") {
		t.Fatalf("an SA was deleted or added again instead of moved (%d adds of the outbound SA):\n%s", n, p.Output())
	}
	// the counters go on into the kernel's SA at its new address
	var after uint64
	if err := lab.PollFor(ctx, "counters in the kernel's migrated SA", 10*time.Second, 100*time.Millisecond, func() (bool, error) {
		var ok bool
		after, ok = oseq(moved)
		return ok && after > before, nil
	}); err != nil {
		t.Fatalf("%v (oseq %d before the move, %d after)", err, before, after)
	}
	if strings.Contains(p.Output(), "SA block") {
		t.Fatalf("an SA was blocked:\n%s", p.Output())
	}
	t.Logf("outbound SA oseq %d before the migrate, %d after at its new address", before, after)
	if testing.Verbose() {
		t.Logf("probe:\n%s", p.Output())
	}
}
