package engine

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// A rekey's new outbound SA is held back (the older one keeps the
// policy) until the peer sends on the new CHILD_SA, the older SA goes or
// is blocked, or handoverMax passes; an inbound SA older than the SA
// replaced does not count as the peer's traffic; the first SA of a
// reqid is bound at once.
func TestRekeyHandover(t *testing.T) {
	ctx := context.Background()
	inOf := func(spi uint32) *model.SA {
		sa := outSA(spi, 7)
		sa.Inbound, sa.Dst, sa.Src = true, sa.Src, sa.Dst
		return sa
	}
	id := func(spi uint32) model.SAID { return outSA(spi, 7).SAID }
	start := func(t *testing.T) (*Engine, *fakeDP, time.Time) {
		e, dp := newEngine()
		must(t, e.AddPolicy(ctx, outPolicy(7)))
		must(t, e.AddSA(ctx, inOf(0x10))) // the first CHILD_SA: bound at once
		must(t, e.AddSA(ctx, outSA(0x100, 7)))
		if spi := boundSPI(t, dp); spi != 0x100 {
			t.Fatalf("first SA of the reqid: bound 0x%x, want 0x100", spi)
		}
		t0 := time.Now()
		must(t, e.AddSA(ctx, outSA(0x200, 7))) // the rekey's
		if spi := boundSPI(t, dp); spi != 0x100 {
			t.Fatalf("rekey's SA bound at once: 0x%x", spi)
		}
		// the old inbound SA carries traffic (the fake counts 2 packets
		// on every SA): not the peer's sign
		if n := e.handover(t0); n != 1 || boundSPI(t, dp) != 0x100 {
			t.Fatalf("handed over on the old inbound SA's traffic (%d held, bound 0x%x)", n, boundSPI(t, dp))
		}
		return e, dp, t0
	}
	t.Run("peer sends on the new SA", func(t *testing.T) {
		e, dp, t0 := start(t)
		must(t, e.AddSA(ctx, inOf(0x20)))
		if n := e.handover(t0); n != 0 || boundSPI(t, dp) != 0x200 {
			t.Fatalf("%d held, bound 0x%x; want the new SA", n, boundSPI(t, dp))
		}
	})
	t.Run("older SA deleted", func(t *testing.T) {
		e, dp, _ := start(t)
		must(t, e.DelSA(ctx, id(0x100)))
		if spi := boundSPI(t, dp); spi != 0x200 {
			t.Fatalf("older SA deleted: bound 0x%x, want 0x200", spi)
		}
	})
	t.Run("older SA blocked", func(t *testing.T) {
		e, dp, t0 := start(t)
		e.mu.sas[id(0x100)].blocked = true
		if n := e.handover(t0); n != 0 || boundSPI(t, dp) != 0x200 {
			t.Fatalf("older SA blocked: %d held, bound 0x%x", n, boundSPI(t, dp))
		}
	})
	t.Run("wait over", func(t *testing.T) {
		e, dp, t0 := start(t)
		if n := e.handover(t0.Add(handoverMax / 2)); n != 1 {
			t.Fatalf("released before the wait was over")
		}
		if n := e.handover(t0.Add(handoverMax + time.Millisecond)); n != 0 || boundSPI(t, dp) != 0x200 {
			t.Fatalf("after %v: %d held, bound 0x%x", handoverMax, n, boundSPI(t, dp))
		}
	})
	t.Run("the engine's own watch", func(t *testing.T) {
		dp := newFake()
		e := New(slog.New(slog.NewTextHandler(io.Discard, nil)), dp)
		must(t, e.AddPolicy(ctx, outPolicy(7)))
		must(t, e.AddSA(ctx, outSA(0x100, 7)))
		must(t, e.AddSA(ctx, outSA(0x200, 7)))
		must(t, e.AddSA(ctx, inOf(0x20)))
		deadline := time.Now().Add(handoverMax / 2)
		for {
			e.mu.Lock()
			spi, holding := boundSPI(t, dp), e.mu.holding
			e.mu.Unlock()
			if spi == 0x200 && !holding {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("watchHolds did not hand over on the peer's traffic: bound 0x%x, watching %v", spi, holding)
			}
			time.Sleep(time.Millisecond)
		}
	})
}
