package engine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

func inPolicy(reqid uint32) *model.Policy {
	p := outPolicy(reqid)
	p.Sel.Src, p.Sel.Dst = p.Sel.Dst, p.Sel.Src
	p.Dir = model.DirIn
	p.TmplSrc, p.TmplDst = peer, gw
	return p
}

// charonA installs a CHILD_SA (SAs 0x10 in, 0x11 out, reqid 1) and its
// policies through plugin connection 1 (PID 100), then dies.
func charonA(t *testing.T, e *Engine) {
	t.Helper()
	ctx := WithConn(context.Background(), 1)
	e.Connected(1, 100)
	e.ReplayDone(1, 0, 0)
	must(t, e.AddSA(ctx, inSA(0x10, 1)))
	must(t, e.AddSA(ctx, outSA(0x11, 1)))
	must(t, e.AddPolicy(ctx, outPolicy(1)))
	must(t, e.AddPolicy(ctx, inPolicy(1)))
	e.Disconnected(1)
}

func logEngine() (*Engine, *fakeDP, *bytes.Buffer) {
	var buf bytes.Buffer
	dp := newFake()
	e := New(slog.New(slog.NewTextHandler(&buf, nil)), dp)
	e.handoverManual = true
	return e, dp, &buf
}

func spisOf(e *Engine) map[uint32]bool {
	m := map[uint32]bool{}
	for _, s := range e.ListSAs() {
		m[s.SPI] = true
	}
	return m
}

// TestReconcileRemovesDeadCharonsSAs: charon killed, a new one (another
// PID) connects with nothing to replay and brings the CHILD_SA up again
// (same reqid, new SPIs, the same policies): after the grace period the
// dead charon's SAs are gone, each with a log line; the new charon's SAs
// and the policies it installed again stay, holding its references only.
func TestReconcileRemovesDeadCharonsSAs(t *testing.T) {
	e, dp, logs := logEngine()
	e.SetReconcileGrace(30 * time.Second)
	charonA(t, e)
	e.Connected(2, 200)
	e.ReplayDone(2, 0, 0)
	start := time.Now()
	ctx := WithConn(context.Background(), 2)
	// during the grace period: the new charon's CHILD_SA
	must(t, e.AddSA(ctx, inSA(0x20, 1)))
	must(t, e.AddSA(ctx, outSA(0x21, 1)))
	must(t, e.AddPolicy(ctx, outPolicy(1)))
	must(t, e.AddPolicy(ctx, inPolicy(1)))
	// not a rekey of the dead charon's CHILD_SA (the peer replaced that
	// IKE_SA): the new outbound SA carries traffic at once, no handover
	for _, b := range dp.bindings {
		if b.Policy.Dir == model.DirOut && (!b.HasSA || b.SA.SPI != 0x21) {
			t.Fatalf("out policy bound to %+v, want the new charon's 0x21 at once", b.SA)
		}
	}

	e.checkLifetimes(start.Add(29 * time.Second))
	if got := spisOf(e); len(got) != 4 {
		t.Fatalf("removed within the grace period: %v", got)
	}
	e.checkLifetimes(start.Add(31 * time.Second))
	got := spisOf(e)
	if len(got) != 2 || !got[0x20] || !got[0x21] {
		t.Fatalf("after the grace period: SAs %v, want the new charon's 0x20 and 0x21", got)
	}
	if dp.sas[outSA(0x11, 1).SAID] || dp.sas[inSA(0x10, 1).SAID] {
		t.Fatal("the dead charon's SAs are still in the data plane")
	}
	for _, spi := range []string{"0x00000010", "0x00000011"} {
		if !strings.Contains(logs.String(), `SA removed: installed by a charon that is gone, unknown to the running one" spi=`+spi) {
			t.Errorf("no log line for %s:\n%s", spi, logs)
		}
	}
	if n := boundTo(t, e, model.DirOut); n != 0x21 {
		t.Errorf("outbound policy bound to 0x%x, want 0x21", n)
	}
	// the policies are the new charon's alone: its deletes remove them
	must(t, e.DelPolicy(ctx, outPolicy(1).PolicyID))
	must(t, e.DelPolicy(ctx, inPolicy(1).PolicyID))
	if ps := e.ListPolicies(); len(ps) != 0 {
		t.Fatalf("the dead charon's references kept policies: %+v", ps)
	}
}

func boundTo(t *testing.T, e *Engine, dir model.Dir) uint32 {
	t.Helper()
	for _, p := range e.ListPolicies() {
		if p.Dir == dir {
			return p.SPI
		}
	}
	t.Fatalf("no %s policy", dir)
	return 0
}

// TestReconcileRemovesPoliciesNoCharonKnows: the new charon does not bring
// the CHILD_SA up again: its SAs and policies go after the grace period.
func TestReconcileRemovesPoliciesNoCharonKnows(t *testing.T) {
	e, dp, logs := logEngine()
	e.SetReconcileGrace(time.Second)
	charonA(t, e)
	e.Connected(2, 200)
	e.ReplayDone(2, 0, 0)
	e.checkLifetimes(time.Now().Add(2 * time.Second))
	if n, p := len(e.ListSAs()), len(e.ListPolicies()); n != 0 || p != 0 {
		t.Fatalf("%d SAs, %d policies left", n, p)
	}
	if len(dp.sas) != 0 {
		t.Fatalf("data plane still has %v", dp.sas)
	}
	if c := strings.Count(logs.String(), "policy removed: installed by a charon that is gone"); c != 2 {
		t.Fatalf("%d policy log lines, want 2:\n%s", c, logs)
	}
	if e.Closed() {
		t.Fatal("the fast path closed with a charon connected")
	}
}

// TestReconcileKeepsWhatTheRunningCharonKnows: the same charon reconnects
// (same PID) and replays its SAs: nothing is marked; another charon that
// replays nothing but whose VICI lists an SA keeps that one; grace 0
// disables the reconciliation.
func TestReconcileKeepsWhatTheRunningCharonKnows(t *testing.T) {
	t.Run("same charon replays", func(t *testing.T) {
		e, _, _ := logEngine()
		e.SetReconcileGrace(time.Second)
		charonA(t, e)
		e.Connected(2, 100)
		ctx := WithConn(context.Background(), 2)
		for _, sa := range []*model.SA{inSA(0x10, 1), outSA(0x11, 1)} {
			if err := e.AddSA(ctx, sa); !errors.Is(err, model.ErrExists) {
				t.Fatalf("replay of a kept SA: %v", err)
			}
		}
		e.ReplayDone(2, 2, 0)
		e.checkLifetimes(time.Now().Add(time.Minute))
		if n := len(e.ListSAs()); n != 2 {
			t.Fatalf("%d SAs left, want 2", n)
		}
	})
	t.Run("another charon replays them", func(t *testing.T) {
		e, _, _ := logEngine()
		e.SetReconcileGrace(time.Second)
		charonA(t, e)
		e.Connected(2, 200)
		ctx := WithConn(context.Background(), 2)
		_ = e.AddSA(ctx, inSA(0x10, 1)) // replayed: adopted
		e.ReplayDone(2, 1, 0)
		e.checkLifetimes(time.Now().Add(time.Minute))
		if got := spisOf(e); len(got) != 1 || !got[0x10] {
			t.Fatalf("SAs %v, want the replayed 0x10 alone", got)
		}
	})
	t.Run("VICI lists it", func(t *testing.T) {
		e, _, logs := logEngine()
		e.SetReconcileGrace(time.Second)
		charonA(t, e)
		e.SetChildren(true, []Child{{Names: Names{Conn: "gw", Child: "net"}, Reqid: 1, SPIIn: 0x10, SPIOut: 0x11}})
		e.Connected(2, 200)
		e.ReplayDone(2, 0, 0)
		e.checkLifetimes(time.Now().Add(time.Minute))
		if n, p := len(e.ListSAs()), len(e.ListPolicies()); n != 2 || p != 2 {
			t.Fatalf("%d SAs, %d policies left, want 2 and 2:\n%s", n, p, logs)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		e, _, _ := logEngine()
		e.SetReconcileGrace(0)
		charonA(t, e)
		e.Connected(2, 200)
		e.ReplayDone(2, 0, 0)
		e.checkLifetimes(time.Now().Add(time.Hour))
		if n := len(e.ListSAs()); n != 2 {
			t.Fatalf("%d SAs left, want 2", n)
		}
	})
	t.Run("first charon", func(t *testing.T) {
		// swanpathd restarted: the plugin replays everything, nothing
		// is anyone else's
		e, _, _ := logEngine()
		e.SetReconcileGrace(time.Second)
		ctx := WithConn(context.Background(), 1)
		e.Connected(1, 100)
		must(t, e.AddSA(ctx, inSA(0x10, 1)))
		must(t, e.AddPolicy(ctx, outPolicy(1)))
		e.ReplayDone(1, 2, 0)
		e.checkLifetimes(time.Now().Add(time.Minute))
		if n, p := len(e.ListSAs()), len(e.ListPolicies()); n != 1 || p != 1 {
			t.Fatalf("%d SAs, %d policies left", n, p)
		}
	})
}
