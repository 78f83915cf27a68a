// swanpath-demo is `make demo`: it builds the lab (LAN host, swanpath
// gateway, kernel-libipsec peer, host behind it), brings the tunnel up,
// passes ping and iperf3 traffic through the fast path in both directions
// and prints the SA table with counters. Everything it creates is removed
// when it exits, also on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

func main() {
	bin := flag.String("bin", "bin", "directory with swanpathd and swanpathctl")
	esp := flag.String("esp", "aes128gcm16", "ESP proposal of the tunnel")
	secs := flag.Int("seconds", 5, "seconds of iperf3 per direction")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "swanpath-demo: run as root (sudo make demo)")
		os.Exit(1)
	}
	testing.Init()

	r := lab.NewRunner("swanpath-demo")
	code := 0
	if err := r.Run(func() {
		demo(r, filepath.Join(*bin, "swanpathd"), filepath.Join(*bin, "swanpathctl"), *esp, *secs)
	}); err != nil {
		fmt.Fprintln(os.Stderr, "swanpath-demo: FAILED:", err)
		code = 1
	}
	os.Exit(code)
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func demo(r *lab.Runner, swanpathd, swanpathctl, esp string, secs int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	step("building the lab: h1 -- gw (swanpathd) -- WAN -- pr (charon + kernel-libipsec) -- h2")
	l := lab.New(r, lab.Options{})
	g, err := l.StartSwanpathGateway(ctx, swanpathd, swanpathctl, lab.Tunnel{ESPProposals: esp, Encap: true})
	if err != nil {
		if g != nil && g.D != nil {
			r.Logf("swanpathd output:\n%s", g.D.Output())
		}
		r.Fatal(err)
	}
	fmt.Printf("tunnel %s up (ESP %s), namespaces %s-*\n", lab.ChildName, esp, l.Prefix())

	step("ping %s -> %s and back, through the fast path", lab.H1Addr, lab.H2Addr)
	if err := l.Ping(ctx, lab.H1, lab.H2Addr, 5); err != nil {
		r.Fatal(err)
	}
	if err := l.Ping(ctx, lab.H2, lab.H1Addr, 5); err != nil {
		r.Fatal(err)
	}
	fmt.Println("5/5 replies each way")

	for _, reverse := range []bool{false, true} {
		dir := "h1 -> h2"
		if reverse {
			dir = "h2 -> h1"
		}
		step("iperf3 TCP %d s, %s", secs, dir)
		res, err := l.Iperf3(ctx, lab.H2, lab.H2Addr, lab.H1, secs, reverse)
		if err != nil {
			r.Fatal(err)
		}
		fmt.Printf("%.1f Mbit/s, %d bytes received\n", res.BitsPerSec/1e6, res.Bytes)
	}

	step("swanpathctl sa (gateway)")
	show(r, ctx, g.D, "sa")
	step("swanpathctl stats (gateway)")
	show(r, ctx, g.D, "stats")
	step("swanctl --list-sas (peer, kernel-libipsec)")
	out, err := g.PR.Swanctl(ctx, "--list-sas")
	if err != nil {
		r.Fatal(err)
	}
	fmt.Println(strings.TrimSpace(out))
	step("done; removing the lab")
}

func show(r *lab.Runner, ctx context.Context, d *lab.Swanpathd, what string) {
	out, err := d.Ctl(ctx, what)
	if err != nil {
		r.Fatal(err)
	}
	fmt.Println(strings.TrimRight(out, "\n"))
}
