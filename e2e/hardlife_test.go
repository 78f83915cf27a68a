package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/lab"
)

// TestHardLifetimeWithoutCharon: the gateway's charon is stopped (SIGSTOP:
// it neither rekeys nor deletes), so its CHILD_SA reaches its hard
// lifetime (life_time 12 s) in swanpathd alone. swanpathd deletes both SAs
// itself, as the kernel does: they are gone from `swanpathctl sa` soon
// after 12 s, the policies charon installed stay (the outbound one bound
// to no SA). Once charon resumes, it gets the hard expires and deletes the
// CHILD_SA (and makes a new one): its deletes are answered as the kernel
// answers them for a missing SA (no error in charon's log).
func TestHardLifetimeWithoutCharon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const life = 12 * time.Second
	g := start(t, ctx, lab.Options{}, lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true,
		GatewayChildOptions: []string{"rekey_time = 10s", "life_time = 12s", "rand_time = 0"}})
	installed := time.Now() // a little after charon installed them
	warmUp(t, ctx, g)
	sas, err := g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 2 {
		t.Fatalf("%d SAs, want the CHILD_SA's two: %+v", len(sas), sas)
	}
	if err := g.gw.Proc().Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = g.gw.Proc().Signal(syscall.SIGCONT)
		}
	})

	err = lab.PollFor(ctx, "the SAs deleted at their hard lifetime", life+20*time.Second, 100*time.Millisecond, func() (bool, error) {
		sas, err := g.d.SAs(ctx)
		if err != nil {
			return false, err
		}
		return len(sas) == 0, fmt.Errorf("swanpathctl sa lists %d SAs", len(sas))
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(installed); el < life-2*time.Second {
		t.Fatalf("SAs gone %v after install, before their hard lifetime %v", el, life)
	}
	for _, s := range sas {
		if !strings.Contains(g.d.Output(), `SA deleted at its hard lifetime" spi=`+s.SPI) {
			t.Errorf("no log line for the hard delete of %s", s.SPI)
		}
	}
	out, err := g.d.Ctl(ctx, "policy", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var pols []ctl.Policy
	if err := json.Unmarshal([]byte(out), &pols); err != nil {
		t.Fatal(err)
	}
	outs := 0
	for _, p := range pols {
		if p.Dir == "out" && p.Action == "ipsec" {
			outs++
			if p.SPI != "" {
				t.Errorf("outbound policy %s -> %s still bound to %s", p.Src, p.Dst, p.SPI)
			}
		}
	}
	if outs == 0 {
		t.Fatalf("charon's outbound policy was removed with its SA: %s", out)
	}

	// charon resumes: it reads the hard expires and deletes the CHILD_SA
	if err := g.gw.Proc().Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	old := map[string]bool{}
	for _, s := range sas {
		old[strings.TrimPrefix(s.SPI, "0x")] = true
	}
	err = waitFor(ctx, "charon deleting the expired CHILD_SA", func() (bool, error) {
		sas, err := g.gw.ListSAs(ctx)
		if err != nil {
			return false, err
		}
		for _, ike := range sas {
			for _, c := range ike.Children {
				if old[c.SPIIn] || old[c.SPIOut] {
					return false, fmt.Errorf("charon still has %+v", c)
				}
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	log := g.gw.Log()
	for _, bad := range []string{"unable to delete SAD entry", "unable to delete"} {
		if strings.Contains(log, bad) {
			t.Errorf("charon logged %q:\n%s", bad, log)
		}
	}
	for _, line := range strings.Split(g.d.Output(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "DEL_SA") {
			t.Errorf("swanpathd warned about charon's delete: %s", line)
		}
	}
}

// TestDeadCharonSAsGoAtHardLifetime: the gateway's charon is SIGKILLed and
// a new one brings the tunnel up again, with reconciliation off
// (charon.reconcile_grace = 0): the dead charon's SAs leave the fast path
// at their hard lifetime at the latest (life_time 20 s), not never, and
// the new CHILD_SA's stay.
func TestDeadCharonSAsGoAtHardLifetime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const life = 20 * time.Second
	g := start(t, ctx, lab.Options{ReconcileGrace: "0"}, lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true,
		GatewayChildOptions: []string{"rekey_time = 15s", "life_time = 20s", "rand_time = 0"}})
	installed := time.Now()
	warmUp(t, ctx, g)
	old, err := g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 2 {
		t.Fatalf("%d SAs, want the CHILD_SA's two: %+v", len(old), old)
	}
	if err := g.gw.Proc().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := g.gw.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.gw.LoadAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.gw.Initiate(ctx, lab.ChildName); err != nil {
		t.Fatal(err)
	}
	if _, err := g.gw.WaitEstablished(ctx, lab.ChildName); err != nil {
		t.Fatal(err)
	}
	oldSPI := map[string]bool{old[0].SPI: true, old[1].SPI: true}
	err = lab.PollFor(ctx, "the dead charon's SAs gone", life+20*time.Second, 100*time.Millisecond, func() (bool, error) {
		sas, err := g.d.SAs(ctx)
		if err != nil {
			return false, err
		}
		for _, s := range sas {
			if oldSPI[s.SPI] {
				return false, fmt.Errorf("swanpathctl sa still lists %s %s", s.Dir, s.SPI)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(installed); el < life-2*time.Second {
		t.Fatalf("the dead charon's SAs went %v after install, before their hard lifetime %v, with reconciliation off", el, life)
	}
	// the new CHILD_SA's SAs (or those of its rekey) carry the traffic
	sas, err := g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) < 2 {
		t.Errorf("the new CHILD_SA's SAs are gone too: %+v", sas)
	}
	g.pingBothWays(t, ctx, 3)
}
