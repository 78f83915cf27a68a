package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// TestXFRMMirrorKernel: the XFRM mirror (bridge/xfrm) against a real
// Linux ESP (a user-mode-Linux kernel host): swanpathd's engine and mirror
// run inside it on a data plane that only counts (e2e/xfrmprobe), while
// `ip xfrm` plays the IKE daemon. The kernel's SAs (AES-GCM; the outbound
// one with ESN and a soft byte limit, the inbound one UDP-encapsulated)
// and its policy reach the engine with their keys, directions and
// parameters; the fast path opens once the dump is in; swanpathd's
// global bypass pairs are in and the policy gets no pair of its own; the counters go back into the kernel's SA (`ip
// -s xfrm state`: bytes, packets, ESN oseq); the soft byte limit, reached
// on the fast path's counters, reaches listeners as the kernel's own
// expire; deletions follow; after a restart the outbound SA continues
// above what it sent; no key appears in the output.
func TestXFRMMirrorKernel(t *testing.T) {
	ctx, l := kernelPeerLab(t)
	u := l.Host(lab.PR).(*lab.UML)

	// the probe must be readable inside: the instance's root is this
	// machine's / but its /tmp is its own
	probe := filepath.Join(repoRoot(), "build", fmt.Sprintf("xfrmprobe-%d", os.Getpid()))
	build := exec.Command("go", "build", "-o", probe, "./e2e/xfrmprobe")
	build.Dir, build.Env = repoRoot(), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build xfrmprobe: %v\n%s", err, out)
	}
	t.Cleanup(func() { os.Remove(probe) })

	const (
		outKey = "0x0102030405060708090a0b0c0d0e0f1011121314"
		inKey  = "0x2122232425262728292a2b2c2d2e2f3031323334"
	)
	ipx := ipOn(t, ctx, u)
	mon, err := u.Start("ip", "xfrm", "monitor", "expire")
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Stop()
	p1, err := u.Start(u.HostPath(probe), "-secs", "60", "-state", "/run/xfrm-seq.json")
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Stop()
	waitOut := func(p *lab.Proc, what string, re string) []string {
		t.Helper()
		return waitProbe(t, ctx, p, what, re)
	}
	waitOut(p1, "the fast path opens (nothing to replay)", `closed=false`)
	ipx("xfrm", "state", "add", "src", lab.PRWanAddr, "dst", lab.GWWanAddr, "proto", "esp", "spi", "0x1001",
		"reqid", "1", "mode", "tunnel", "replay-window", "128", "flag", "esn",
		"aead", "rfc4106(gcm(aes))", outKey, "128", "limit", "byte-soft", "5000")
	ipx("xfrm", "state", "add", "src", lab.GWWanAddr, "dst", lab.PRWanAddr, "proto", "esp", "spi", "0x2001",
		"reqid", "1", "mode", "tunnel", "replay-window", "32", "encap", "espinudp", "4500", "4501", "0.0.0.0",
		"aead", "rfc4106(gcm(aes))", inKey, "128")
	ipx("xfrm", "policy", "add", "src", "10.9.1.0/24", "dst", "10.9.2.0/24", "dir", "out", "priority", "2000",
		"tmpl", "src", lab.PRWanAddr, "dst", lab.GWWanAddr, "proto", "esp", "reqid", "1", "mode", "tunnel")

	waitOut(p1, "the outbound SA", `SA add spi=0x00001001 dir=out enc=20 int=0 keylen=20 icv=16 encap=false sport=0 dport=0 esn=true window=128 seqstart=0 soft_bytes=5000 reqid=1`)
	waitOut(p1, "the inbound SA", `SA add spi=0x00002001 dir=in enc=20 int=0 keylen=20 icv=16 encap=true sport=4500 dport=4501 esn=false window=32`)
	waitOut(p1, "the policy, bound", `policy (set|bind) sel="src 10.9.1.0/24 dst 10.9.2.0/24".*`)
	// swanpathd's global bypass pairs, and no pair of the policy's own
	// (it would break the daemon's MIGRATE: bridge/xfrm bypass.go)
	if pols := ipx("xfrm", "policy", "list"); strings.Count(pols, "priority 0 ") != 12 || strings.Contains(pols, "priority 1999") {
		t.Fatalf("want the 12 global bypass policies and no pair of the policy's own:\n%s", pols)
	}

	// counters back into the kernel's copy
	var sent uint64
	if err := lab.PollFor(ctx, "counters in the kernel's SA", 10*time.Second, 100*time.Millisecond, func() (bool, error) {
		out := ipx("-s", "xfrm", "state", "get", "src", lab.PRWanAddr, "dst", lab.GWWanAddr, "proto", "esp", "spi", "0x1001")
		k, err := parseKernelSA(out)
		if err != nil {
			return false, err
		}
		sent = k.oseq
		return k.bytes >= 2000 && k.packets >= 20 && sent >= 20, nil
	}); err != nil {
		t.Fatal(err)
	}
	// the soft byte limit, reached on the fast path's counters, reaches
	// the daemon as the kernel's own soft expire
	if err := lab.PollFor(ctx, "soft expire from the kernel", 20*time.Second, 100*time.Millisecond, func() (bool, error) {
		o := mon.Output()
		return strings.Contains(o, "spi 0x00001001") && strings.Contains(o, "hard 0"), nil
	}); err != nil {
		t.Fatalf("%v\nmonitor:\n%s\nprobe:\n%s", err, mon.Output(), p1.Output())
	}
	// for the limit, not for anything else: the counters written just
	// before the expire are past it, and the SA was never blocked
	out := ipx("-s", "xfrm", "state", "get", "src", lab.PRWanAddr, "dst", lab.GWWanAddr, "proto", "esp", "spi", "0x1001")
	if k, err := parseKernelSA(out); err != nil || k.bytes < 5000 {
		t.Fatalf("soft expire before the byte limit:\n%s", out)
	}
	if strings.Contains(p1.Output(), "SA block") || strings.Count(mon.Output(), "spi 0x") != 1 {
		t.Fatalf("an SA added live was blocked or expired otherwise:\n%s\nmonitor:\n%s", p1.Output(), mon.Output())
	}
	// deletions follow
	ipx("xfrm", "state", "delete", "src", lab.GWWanAddr, "dst", lab.PRWanAddr, "proto", "esp", "spi", "0x2001")
	waitOut(p1, "the inbound SA deleted", `SA del spi=0x00002001`)
	ipx("xfrm", "policy", "delete", "src", "10.9.1.0/24", "dst", "10.9.2.0/24", "dir", "out")
	waitOut(p1, "the policy deleted", `policy del sel="src 10.9.1.0/24 dst 10.9.2.0/24"`)
	if pols := ipx("xfrm", "policy", "list"); strings.Contains(pols, "10.9.1.0/24") {
		t.Fatalf("bypass policies left:\n%s", pols)
	}

	// a clean restart: the outbound SA continues above what it sent. The
	// fast path sends on meanwhile: once the kernel's copy says so (a
	// write-back after the deletions), the restart has more to resume
	// above than what was seen before
	if err := lab.PollFor(ctx, "the outbound SA's counters written back after the deletions", 10*time.Second, 100*time.Millisecond, func() (bool, error) {
		out := ipx("-s", "xfrm", "state", "get", "src", lab.PRWanAddr, "dst", lab.GWWanAddr, "proto", "esp", "spi", "0x1001")
		k, err := parseKernelSA(out)
		return err == nil && k.oseq > sent, fmt.Errorf("kernel's oseq not above %d:\n%s", sent, out)
	}); err != nil {
		t.Fatal(err)
	}
	if err := p1.StopGrace(syscall.SIGTERM, 5*time.Second); err != nil {
		t.Logf("stop: %v", err)
	}
	waitOut(p1, "a clean stop", `stopped`)
	// what the kernel's copy says was sent, written back at the stop
	out = ipx("-s", "xfrm", "state", "get", "src", lab.PRWanAddr, "dst", lab.GWWanAddr, "proto", "esp", "spi", "0x1001")
	k, err := parseKernelSA(out)
	if err != nil {
		t.Fatal(err)
	}
	if k.oseq < sent {
		t.Fatalf("the kernel's oseq went back from %d to %d", sent, k.oseq)
	}
	sent = k.oseq
	p2, err := u.Start(u.HostPath(probe), "-secs", "60", "-state", "/run/xfrm-seq.json")
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Stop()
	m := waitOut(p2, "the outbound SA again", `SA add spi=0x00001001 dir=out .* seqstart=(\d+) `)
	start, _ := strconv.ParseUint(m[1], 10, 64)
	if start <= sent {
		t.Fatalf("after a restart the outbound SA starts at %d, not above %d that the kernel's copy says it sent", start, sent)
	}
	if strings.Contains(p2.Output(), "SA block spi=0x00001001") {
		t.Fatalf("the outbound SA is blocked after a clean restart:\n%s", p2.Output())
	}
	for _, k := range []string{outKey[2:], inKey[2:], "\x01\x02\x03\x04\x05\x06", "[1 2 3 4 5"} {
		for _, out := range []string{p1.Output(), p2.Output()} {
			if strings.Contains(strings.ToLower(out), k) {
				t.Fatalf("a key in swanpathd's output (%q)", k)
			}
		}
	}
	t.Logf("outbound SA: sent up to %d before the restart, resumed at %d", sent, start)
	if testing.Verbose() {
		t.Logf("first run:\n%s\nsecond run:\n%s", p1.Output(), p2.Output())
	}
}

// kernelSA is what `ip -s xfrm state get` prints of one SA's counters.
type kernelSA struct{ bytes, packets, oseq uint64 }

var (
	kernelSABytes = regexp.MustCompile(`(\d+)\(bytes\), (\d+)\(packets\)`)
	kernelSAOSeq  = regexp.MustCompile(`oseq 0x([0-9a-f]+)`)
)

// parseKernelSA reads an SA's counters from that output; the error
// quotes the output when they are not in it.
func parseKernelSA(out string) (kernelSA, error) {
	b, o := kernelSABytes.FindStringSubmatch(out), kernelSAOSeq.FindStringSubmatch(out)
	if b == nil || o == nil {
		return kernelSA{}, fmt.Errorf("no SA counters in\n%s", out)
	}
	return kernelSA{bytes: atou(b[1]), packets: atou(b[2]), oseq: hexu(o[1])}, nil
}

func atou(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

// ipOn returns a function that runs `ip ARGS` on the kernel host u and
// returns its output, failing t when it fails.
func ipOn(t *testing.T, ctx context.Context, u *lab.UML) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		out, err := u.Exec(ctx, append([]string{"ip"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

// waitProbe waits until p's output matches re and returns the match (its
// groups), failing t with p's output after 20 s.
func waitProbe(t *testing.T, ctx context.Context, p *lab.Proc, what, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	if err := lab.PollFor(ctx, what, 20*time.Second, 50*time.Millisecond, func() (bool, error) {
		m = rx.FindStringSubmatch(p.Output())
		return m != nil, nil
	}); err != nil {
		t.Fatalf("%v; probe output:\n%s", err, p.Output())
	}
	return m
}

// kernelPeerLab skips t without user-mode Linux; else it gives a context
// of 3 minutes (cancelled when t ends) and a lab whose peer is a kernel
// host.
func kernelPeerLab(t *testing.T) (context.Context, *lab.Lab) {
	t.Helper()
	if why := lab.UMLAvailable(); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx, lab.New(t, lab.Options{KernelPeer: true})
}
