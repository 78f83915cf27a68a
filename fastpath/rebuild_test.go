package fastpath

import (
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// The rebuild state machine with fake tables: no EAL, no root, so that
// `go test -race -run TestRebuild ./fastpath/` checks its locking.

// fakeTables are policy tables as numbers: a snapshot is the policy set's
// size and a version, built tables the snapshot they came from.
type fakeTables struct {
	mu   *sync.Mutex // the owner's lock, held in the *Locked calls
	t    *testing.T
	size int
	ver  int // bumped per change, as the policy set's content
	// build blocks while gate is set, after telling entered
	gate, entered chan struct{}
	fail          error
	installed     []int // versions published, in order
	discarded     []int
}

func (f *fakeTables) locked() {
	f.t.Helper()
	if f.mu.TryLock() {
		f.mu.Unlock()
		f.t.Error("a *Locked call without the lock")
	}
}

func (f *fakeTables) sizeLocked() int     { f.locked(); return f.size }
func (f *fakeTables) snapshotLocked() int { f.locked(); return f.ver }
func (f *fakeTables) installLocked(t, _ int) {
	f.locked()
	f.installed = append(f.installed, t)
}
func (f *fakeTables) discard(t int) { f.discarded = append(f.discarded, t) }

func (f *fakeTables) build(s int) (int, error) {
	gate, entered, fail := f.gate, f.entered, f.fail // before the test goes on
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	return s, fail
}

// fakeTimer is a timer the test fires.
type fakeTimer struct {
	d       time.Duration
	fn      func()
	stopped bool
}

func (t *fakeTimer) Stop() bool { t.stopped = true; return true }

type rebuildRig struct {
	t      *testing.T
	mu     sync.Mutex
	tables *fakeTables
	r      *rebuilder[int, int]
	timers []*fakeTimer
}

func newRebuildRig(t *testing.T, size int) *rebuildRig {
	g := &rebuildRig{t: t}
	g.tables = &fakeTables{mu: &g.mu, t: t, size: size}
	g.r = newRebuilder[int, int](&g.mu, g.tables, slog.New(slog.DiscardHandler))
	g.r.after = func(d time.Duration, fn func()) stopper {
		tm := &fakeTimer{d: d, fn: fn}
		g.timers = append(g.timers, tm)
		return tm
	}
	return g
}

// change is what SetPolicy and DelPolicy do: count the change, then
// publish or schedule.
func (g *rebuildRig) change(removed bool) {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tables.ver++
	g.r.noteLocked(removed)
	if err := g.r.changedLocked(); err != nil {
		g.t.Fatal(err)
	}
}

// fire runs the last timer's rebuild, as time.AfterFunc would.
func (g *rebuildRig) fire() {
	g.t.Helper()
	if len(g.timers) == 0 {
		g.t.Fatal("no rebuild scheduled")
	}
	g.timers[len(g.timers)-1].fn()
}

func (g *rebuildRig) settled() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.r.settledLocked()
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Small policy sets are published within the request: the policy is in
// force when charon's call returns.
func TestRebuildSmallAtOnce(t *testing.T) {
	g := newRebuildRig(t, coalesceAbove-1)
	g.change(false)
	g.change(true)
	if !equal(g.tables.installed, []int{1, 2}) || len(g.timers) != 0 || !g.settled() {
		t.Fatalf("installed %v, timers %d, settled %v", g.tables.installed, len(g.timers), g.settled())
	}
}

// Big policy sets: a burst of changes costs one rebuild, scheduled
// once and no later than 100 ms after the last publication.
func TestRebuildCoalesces(t *testing.T) {
	g := newRebuildRig(t, coalesceAbove)
	for range 50 {
		g.change(false)
	}
	if len(g.timers) != 1 || len(g.tables.installed) != 0 {
		t.Fatalf("%d timers, %d installs after a burst, want 1 and 0", len(g.timers), len(g.tables.installed))
	}
	if d := g.timers[0].d; d < 0 || d > 100*time.Millisecond {
		t.Fatalf("rebuild due in %v", d)
	}
	g.fire()
	if !equal(g.tables.installed, []int{50}) || !g.settled() {
		t.Fatalf("installed %v, settled %v", g.tables.installed, g.settled())
	}
	// a timer that fires late (after a newer one was set) is harmless
	g.change(false)
	g.timers[0].fn()
	if !equal(g.tables.installed, []int{50, 51}) {
		t.Fatalf("installed %v", g.tables.installed)
	}
}

// duringBuild fires the due rebuild in its own goroutine, runs meanwhile
// while build is blocked outside the lock, lets it finish and waits.
func (g *rebuildRig) duringBuild(meanwhile func()) {
	g.t.Helper()
	g.tables.gate, g.tables.entered = make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	fn := g.timers[len(g.timers)-1].fn
	go func() { fn(); close(done) }()
	<-g.tables.entered
	meanwhile() // with the lock free: requests go on
	g.tables.entered = nil
	close(g.tables.gate)
	g.tables.gate = nil
	<-done
}

// Added during a build: the built tables are installed, and the change
// follows in the next rebuild.
func TestRebuildAddDuringBuild(t *testing.T) {
	g := newRebuildRig(t, coalesceAbove)
	g.change(false)
	g.duringBuild(func() { g.change(false) })
	if !equal(g.tables.installed, []int{1}) || len(g.timers) != 2 || g.settled() {
		t.Fatalf("installed %v, %d timers, settled %v", g.tables.installed, len(g.timers), g.settled())
	}
	g.fire()
	if !equal(g.tables.installed, []int{1, 2}) || !g.settled() {
		t.Fatalf("installed %v, settled %v", g.tables.installed, g.settled())
	}
}

// Removed during a build: the built tables still hold the policy, so they
// are thrown away, and the next rebuild runs under the lock (a stream of
// removals cannot starve it).
func TestRebuildRemoveDuringBuild(t *testing.T) {
	g := newRebuildRig(t, coalesceAbove)
	g.change(false)
	g.duringBuild(func() { g.change(true) })
	if len(g.tables.installed) != 0 || !equal(g.tables.discarded, []int{1}) || !g.r.stale {
		t.Fatalf("installed %v, discarded %v, stale %v", g.tables.installed, g.tables.discarded, g.r.stale)
	}
	g.fire()
	if !equal(g.tables.installed, []int{2}) || g.r.stale || !g.settled() {
		t.Fatalf("installed %v, stale %v, settled %v", g.tables.installed, g.r.stale, g.settled())
	}
}

// A failed build publishes nothing; the next change tries again.
func TestRebuildFails(t *testing.T) {
	g := newRebuildRig(t, coalesceAbove)
	g.tables.fail = errors.New("no memory")
	g.change(false)
	g.fire()
	if len(g.tables.installed) != 0 || g.settled() {
		t.Fatalf("installed %v after a failed build", g.tables.installed)
	}
	g.tables.fail = nil
	g.change(false)
	g.fire()
	if !equal(g.tables.installed, []int{2}) || !g.settled() {
		t.Fatalf("installed %v, settled %v", g.tables.installed, g.settled())
	}
}

// Teardown waits for a build outside the lock, which then publishes
// nothing, and cancels the rebuild due; none starts afterwards.
func TestRebuildClose(t *testing.T) {
	g := newRebuildRig(t, coalesceAbove)
	g.change(false)
	gate, entered := make(chan struct{}), make(chan struct{})
	g.tables.gate, g.tables.entered = gate, entered
	built := make(chan struct{})
	go func() { g.timers[0].fn(); close(built) }()
	<-entered
	closed := make(chan struct{})
	go func() {
		g.mu.Lock()
		g.r.closeLocked()
		g.mu.Unlock()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("closeLocked returned while a build ran")
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	<-closed
	<-built
	if len(g.tables.installed) != 0 || !equal(g.tables.discarded, []int{1}) {
		t.Fatalf("installed %v, discarded %v after close", g.tables.installed, g.tables.discarded)
	}
	g.change(false)
	g.fire()
	if len(g.timers) != 1 || len(g.tables.installed) != 0 {
		t.Fatalf("%d timers, installed %v after close", len(g.timers), g.tables.installed)
	}
}
