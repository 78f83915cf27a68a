package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// Diagnose describes the gateway's state for a failing test: load here
// and inside, every thread of the kernel host (state, CPU, where it
// sleeps), the kernel's XFRM policies and SAs (no key lines), its XFRM
// error counters, swanpathctl's views and the tails of swanpathd's and
// pluto's logs. Each part that cannot be had says why; the whole takes at
// most about a minute however unresponsive the instance is.
func (g *XFRMGateway) Diagnose() string {
	var b strings.Builder
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&b, "this machine's load: %s", la)
	}
	u, _ := g.l.Host(GW).(*UML)
	part := func(name string, f func(ctx context.Context) (string, error)) {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		t0 := time.Now()
		out, err := f(ctx)
		fmt.Fprintf(&b, "--- %s (%v)", name, time.Since(t0).Round(time.Millisecond))
		if err != nil {
			fmt.Fprintf(&b, " error: %v", err)
		}
		fmt.Fprintf(&b, "\n%s\n", strings.TrimRight(out, "\n"))
	}
	if u != nil {
		exec := func(args ...string) func(ctx context.Context) (string, error) {
			return func(ctx context.Context) (string, error) { return u.Exec(ctx, args...) }
		}
		part("gw load", exec("cat", "/proc/loadavg"))
		part("gw threads", exec("ps", "-eLo", "pid,tid,cls,ni,stat,pcpu,time,wchan:22,comm"))
		part("gw xfrm policies", exec("ip", "xfrm", "policy"))
		part("gw xfrm states (keys cut)", func(ctx context.Context) (string, error) {
			out, err := u.Exec(ctx, "ip", "-s", "xfrm", "state")
			return withoutKeys(out), err
		})
		part("gw xfrm_stat", exec("cat", "/proc/net/xfrm_stat"))
		part("gw links", exec("ip", "-o", "link"))
		part("gw routes (main)", exec("ip", "route"))
		part("gw neighbours", exec("ip", "neigh"))
	}
	if g.D != nil {
		for _, v := range []string{"stats", "sa", "policy"} {
			part("swanpathctl "+v, func(ctx context.Context) (string, error) { return g.D.Ctl(ctx, v) })
		}
		fmt.Fprintf(&b, "--- swanpathd log\n%s\n", tail(g.D.Output(), 150))
	}
	if g.Pluto != nil && g.Pluto.proc != nil {
		fmt.Fprintf(&b, "--- pluto log\n%s\n", tail(g.Pluto.Output(), 60))
	}
	return b.String()
}

// withoutKeys drops the lines of `ip xfrm state` output that carry key
// material (the algorithm lines: aead, enc, auth, auth-trunc, comp).
func withoutKeys(s string) string {
	var out []string
	for _, ln := range strings.Split(s, "\n") {
		f := strings.Fields(ln)
		if len(f) > 0 {
			switch f[0] {
			case "aead", "enc", "auth", "auth-trunc", "comp", "crypt":
				out = append(out, strings.Repeat(" ", len(ln)-len(strings.TrimLeft(ln, " \t")))+f[0]+" "+valueOr(f, 1)+" [key cut]")
				continue
			}
		}
		out = append(out, ln)
	}
	return strings.Join(out, "\n")
}

func valueOr(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}
