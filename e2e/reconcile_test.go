package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/lab"
)

// TestReconcileAfterCharonKilled: the gateway's charon is SIGKILLed and
// started again, and brings the tunnel up again (new SPIs, the same reqid
// and policies). Its plugin has nothing to replay while swanpathd holds
// the dead charon's SAs, so after the grace period (charon.reconcile_grace,
// 10 s here) those leave the fast path, each with a log line, long before
// their lifetimes; the new charon's SAs and policies stay. A UDP stream
// runs throughout: nothing sent after the new CHILD_SA is up is lost, the
// removal of the old SAs included.
func TestReconcileAfterCharonKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const grace = 10 * time.Second
	g := start(t, ctx, lab.Options{ReconcileGrace: grace.String()}, lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true})
	warmUp(t, ctx, g)
	old, err := g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 2 {
		t.Fatalf("%d SAs, want the CHILD_SA's two: %+v", len(old), old)
	}

	stream, err := g.l.StartUDPSeq(ctx, lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7791,
		Rate: 500, Duration: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFlowing(t, ctx, g, 500)

	if err := g.gw.Proc().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	connected := time.Now() // the new charon's plugin connects during Restart
	if err := g.gw.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.gw.LoadAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.gw.Initiate(ctx, lab.ChildName); err != nil {
		t.Fatal(err)
	}
	child, err := g.gw.WaitEstablished(ctx, lab.ChildName) // the gateway's view: SPIIn is its inbound SA
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.pr.WaitEstablished(ctx, lab.ChildName); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	for _, s := range old {
		if strings.EqualFold(strings.TrimPrefix(s.SPI, "0x"), child.SPIIn) || strings.EqualFold(strings.TrimPrefix(s.SPI, "0x"), child.SPIOut) {
			t.Fatalf("the new CHILD_SA reuses SPI %s", s.SPI)
		}
	}
	if el := time.Since(connected); el > grace-2*time.Second {
		t.Fatalf("the new CHILD_SA took %v to come up: the test cannot tell the grace period from its end", el)
	}
	sas, err := g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 4 {
		t.Errorf("within the grace period: %d SAs, want the dead charon's two and the new two: %+v", len(sas), sas)
	}

	oldSPI := map[string]bool{old[0].SPI: true, old[1].SPI: true}
	err = lab.PollFor(ctx, "the dead charon's SAs removed", grace+20*time.Second, 100*time.Millisecond, func() (bool, error) {
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
	if el := time.Since(connected); el < grace-time.Second {
		t.Fatalf("the dead charon's SAs went %v after the new charon connected, before the grace period %v", el, grace)
	}
	for spi := range oldSPI {
		if !strings.Contains(g.d.Output(), `SA removed: installed by a charon that is gone, unknown to the running one" spi=`+spi) {
			t.Errorf("no log line for the removal of %s", spi)
		}
	}
	sas, err = g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sas) != 2 {
		t.Errorf("%d SAs left, want the new charon's two: %+v", len(sas), sas)
	}
	for _, s := range sas {
		if spi := strings.TrimPrefix(s.SPI, "0x"); !strings.EqualFold(spi, child.SPIIn) && !strings.EqualFold(spi, child.SPIOut) {
			t.Errorf("SA %s %s is not the new CHILD_SA's (%s/%s)", s.Dir, s.SPI, child.SPIIn, child.SPIOut)
		}
	}
	out, err := g.d.Ctl(ctx, "policy")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToLower(out), strings.ToLower(child.SPIOut)) {
		t.Errorf("the outbound policy is not bound to the new SA %s:\n%s", child.SPIOut, out)
	}

	res, err := stream.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream: %s", res)
	upAt := up.Sub(res.Start)
	late := 0
	for _, n := range res.Missing {
		if n < uint64(len(res.SentAt)) && res.SentAt[n] > upAt {
			late++
		}
	}
	if late > 0 || res.Corrupt > 0 || res.Received == 0 {
		t.Errorf("%d datagrams sent after the new CHILD_SA was up (%.1fs into the stream) were lost: %s", late, upAt.Seconds(), res)
	}
	if len(res.Missing) > 0 {
		t.Logf("%d datagrams lost before the new CHILD_SA was up", len(res.Missing))
	}
}
