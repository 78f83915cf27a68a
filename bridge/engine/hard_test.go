package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// slotDP is the fake with a bounded number of SAs, like the fast path's
// crypto session pool (fastpath.max_sas).
type slotDP struct {
	*fakeDP
	max int
}

func (s *slotDP) AddSA(sa *model.SA) error {
	if len(s.sas) >= s.max {
		return fmt.Errorf("add SA %s: the fast path holds %d SAs, its fastpath.max_sas", sa.SAID, s.max)
	}
	return s.fakeDP.AddSA(sa)
}

// An SA at its hard lifetime (time, bytes or packets) leaves the engine and
// the fast path at once, its expire goes to charon, its slot is free for
// another SA, and charon's later delete is answered NOT_FOUND.
func TestHardLifetimeDeletesTheSA(t *testing.T) {
	for _, tc := range []struct {
		name string
		hard model.Lifetime
	}{
		{"time", model.Lifetime{Time: time.Minute}},
		{"bytes", model.Lifetime{Bytes: 100}}, // the fake reports 100 bytes, 2 packets
		{"packets", model.Lifetime{Packets: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e, fdp := newEngine()
			dp := &slotDP{fakeDP: fdp, max: 2}
			e.dp = dp
			in, out := inSA(0xc0000001, 1), outSA(0x100, 1)
			in.Hard, out.Hard = tc.hard, tc.hard
			must(t, e.AddSA(ctx, in))
			must(t, e.AddSA(ctx, out))
			if err := e.AddSA(ctx, outSA(0x300, 2)); err == nil {
				t.Fatal("a third SA found room in a fast path for two")
			}
			now := time.Now()
			if tc.hard.Time != 0 {
				if evs := e.checkLifetimes(now); len(evs) != 0 {
					t.Fatalf("before the hard time: %+v", evs)
				}
				now = now.Add(2 * time.Minute)
			}
			evs := e.checkLifetimes(now)
			if len(evs) != 2 {
				t.Fatalf("events %+v, want two hard expires", evs)
			}
			for _, ev := range evs {
				if ev.Kind != EventExpire || !ev.Hard {
					t.Fatalf("event %+v, want a hard expire", ev)
				}
			}
			if len(dp.sas) != 0 {
				t.Fatalf("the fast path still holds %v", dp.sas)
			}
			if n := len(e.ListSAs()); n != 0 {
				t.Fatalf("the engine still lists %d SAs", n)
			}
			// its crypto session is released: another SA takes the slot
			must(t, e.AddSA(ctx, outSA(0x300, 2)))
			// charon deletes the CHILD_SA on the hard expire: as the kernel
			for _, id := range []model.SAID{in.SAID, out.SAID} {
				if err := e.DelSA(ctx, id); !errors.Is(err, model.ErrNotFound) {
					t.Fatalf("charon's delete of %s: %v, want NOT_FOUND", id, err)
				}
			}
			if evs := e.checkLifetimes(now.Add(time.Hour)); len(evs) != 0 {
				t.Fatalf("expired again: %+v", evs)
			}
		})
	}
}

// Policies stay as charon installed them: an outbound one bound to the SA
// falls back to the next SA of its reqid, then to none (acquire).
func TestHardLifetimeRebindsPolicies(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	must(t, e.AddPolicy(ctx, outPolicy(7)))
	older, newer := outSA(0x100, 7), outSA(0x200, 7)
	older.Hard = model.Lifetime{Time: 2 * time.Minute}
	newer.Hard = model.Lifetime{Time: time.Minute}
	must(t, e.AddSA(ctx, older))
	must(t, e.AddSA(ctx, newer))
	e.handover(time.Now().Add(handoverMax)) // the newer one takes over
	if spi := boundSPI(t, dp); spi != 0x200 {
		t.Fatalf("bound 0x%x, want the newest 0x200", spi)
	}
	now := time.Now()
	e.checkLifetimes(now.Add(90 * time.Second))
	if spi := boundSPI(t, dp); spi != 0x100 {
		t.Fatalf("after 0x200's hard lifetime bound 0x%x, want 0x100", spi)
	}
	e.checkLifetimes(now.Add(3 * time.Minute))
	if spi := boundSPI(t, dp); spi != 0 {
		t.Fatalf("after both hard lifetimes bound 0x%x, want none", spi)
	}
	if n := len(e.ListPolicies()); n != 1 {
		t.Fatalf("%d policies, want charon's one kept", n)
	}
}

// The SPI of an inbound SA deleted at its hard lifetime is not handed out
// again until charon has deleted it (or goneHold passed): a late delete
// must not hit a new SA.
func TestHardLifetimeKeepsInboundSPIReserved(t *testing.T) {
	ctx := context.Background()
	e, _ := newEngine()
	in := inSA(0xc0000001, 1)
	in.Hard = model.Lifetime{Time: time.Minute}
	must(t, e.AddSA(ctx, in))
	now := time.Now()
	e.checkLifetimes(now.Add(2 * time.Minute))
	e.mu.Lock()
	reserved := e.mu.spis[in.SPI]
	e.mu.Unlock()
	if !reserved {
		t.Fatal("the SPI was freed before charon deleted the SA")
	}
	if err := e.DelSA(ctx, in.SAID); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("delete: %v, want NOT_FOUND", err)
	}
	e.mu.Lock()
	reserved = e.mu.spis[in.SPI]
	e.mu.Unlock()
	if reserved {
		t.Fatal("the SPI is still reserved after charon's delete")
	}

	// charon never deletes it: forgotten after goneHold
	in2 := inSA(0xc0000002, 2)
	in2.Hard = model.Lifetime{Time: time.Minute}
	must(t, e.AddSA(ctx, in2))
	e.checkLifetimes(now.Add(2 * time.Minute))
	e.checkLifetimes(now.Add(3*time.Minute + goneHold))
	e.mu.Lock()
	reserved, remembered := e.mu.spis[in2.SPI], len(e.mu.gone)
	e.mu.Unlock()
	if reserved || remembered != 0 {
		t.Fatalf("after goneHold: reserved %v, %d remembered", reserved, remembered)
	}
}
