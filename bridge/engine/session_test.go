package engine

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// The fast path is closed from the start until a plugin's replay is done;
// policies installed during the replay do not open it; it stays open while
// a replayed plugin is connected or policies remain, and closes when the
// last plugin is gone and no policy is left.
func TestClosedUntilReplayDone(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	dp.closed = true // as the fast path starts
	step := func(what string, wantClosed bool) {
		t.Helper()
		if dp.closed != wantClosed || e.Closed() != wantClosed {
			t.Fatalf("%s: data plane closed=%v engine closed=%v, want %v", what, dp.closed, e.Closed(), wantClosed)
		}
	}
	step("start", true)
	e.Connected(1, 42)
	if !e.Replaying() {
		t.Fatal("not replaying after HELLO")
	}
	if err := e.AddSA(ctx, outSA(0x100, 1)); err != nil {
		t.Fatal(err)
	}
	if err := e.AddPolicy(ctx, outPolicy(1)); err != nil {
		t.Fatal(err)
	}
	step("replayed SA and policy, replay not done", true)
	e.ReplayDone(99, 0, 0) // not a connection that said HELLO
	step("REPLAY_DONE of an unknown connection", true)
	e.ReplayDone(1, 2, 0)
	step("replay done", false)
	if e.Replaying() {
		t.Fatal("still replaying after REPLAY_DONE")
	}

	// charon killed: its policies stay (as the kernel keeps them), so
	// does protection; a new charon's replay (of nothing) keeps it open
	e.Disconnected(1)
	step("charon gone, policies kept", false)
	e.Connected(2, 0)
	step("new charon, replaying", false)
	e.ReplayDone(2, 0, 0)
	// charon stops cleanly: it removes its policies, then disconnects
	if err := e.DelPolicy(ctx, outPolicy(1).PolicyID); err != nil {
		t.Fatal(err)
	}
	step("policies gone, charon still there", false)
	e.Disconnected(2)
	step("no charon, no policy", true)
	e.Connected(3, 0)
	e.ReplayDone(3, 0, 0)
	step("charon back", false)
}

// An SA or policy with a mark or an XFRM interface id is refused, never
// installed without them.
// TestMarksAndInterfaces: a mark no route-based interface can stand for
// (partial mask) is refused by the engine and reaches no data plane; an
// XFRM interface id or a whole mark goes to the data plane, which says
// whether an interface has it (fastpath TestRouteBasedInterface).
func TestMarksAndInterfaces(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	sa := outSA(0x100, 1)
	sa.Mark, sa.MarkMask = 7, 0xff
	if err := e.AddSA(ctx, sa); !errors.Is(err, model.ErrUnsupported) {
		t.Fatalf("SA with a partial mark mask: %v, want ErrUnsupported", err)
	}
	p := outPolicy(1)
	p.Mark, p.MarkMask = 7, 0xff
	if err := e.AddPolicy(ctx, p); !errors.Is(err, model.ErrUnsupported) {
		t.Fatalf("policy with a partial mark mask: %v, want ErrUnsupported", err)
	}
	if len(dp.sas) != 0 || len(e.ListSAs()) != 0 || len(dp.bindings) != 0 || len(e.ListPolicies()) != 0 {
		t.Fatalf("refused SA or policy installed: %v %v", dp.sas, dp.bindings)
	}
	sa = outSA(0x101, 1)
	sa.IfID = 3
	must(t, e.AddSA(ctx, sa))
	sa = outSA(0x102, 1)
	sa.Mark, sa.MarkMask = 7, 0xffffffff
	must(t, e.AddSA(ctx, sa))
	p = outPolicy(1)
	p.IfID = 3
	must(t, e.AddPolicy(ctx, p))
	if len(dp.sas) != 2 || len(dp.bindings) != 1 || dp.bindings[0].Policy.IfID != 3 {
		t.Fatalf("route-based SAs and policy not handed to the data plane: %v %v", dp.sas, dp.bindings)
	}
}

// Acquires and mappings, keyed by what packets carry, are forgotten after
// their hold and with their SA: the maps do not grow for ever.
func TestAcquiresAndMappingsPruned(t *testing.T) {
	ctx := context.Background()
	e, _ := newEngine()
	in := outSA(0x300, 1)
	in.Inbound, in.Dst, in.Src = true, gw, peer
	if err := e.AddSA(ctx, in); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	src, dst := netip.MustParseAddr("10.1.0.10"), netip.MustParseAddr("10.2.0.10")
	for r := range uint32(100) {
		e.Acquire(now, r, src, dst)
	}
	for p := range uint16(50) {
		if _, ok := e.Mapping(now, 0x300, peer, 30000+p); !ok {
			t.Fatalf("mapping %d not raised", p)
		}
	}
	size := func() (int, int) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.mu.acquired), len(e.mu.mapped)
	}
	if a, m := size(); a != 100 || m != 50 {
		t.Fatalf("before: %d acquires, %d mappings", a, m)
	}
	e.checkLifetimes(now.Add(time.Second))
	if a, m := size(); a != 100 || m != 50 {
		t.Fatalf("pruned within the hold: %d acquires, %d mappings", a, m)
	}
	if err := e.DelSA(ctx, in.SAID); err != nil {
		t.Fatal(err)
	}
	if _, m := size(); m != 0 {
		t.Fatalf("%d mappings outlived their SA", m)
	}
	e.checkLifetimes(now.Add(acquireHold))
	if a, _ := size(); a != 0 {
		t.Fatalf("%d acquires outlived their hold", a)
	}
}
