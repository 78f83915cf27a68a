package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

func inSA(spi, reqid uint32) *model.SA {
	sa := outSA(spi, reqid)
	sa.Inbound, sa.Dst, sa.Src = true, gw, peer
	sa.ReplayWindow = 32
	return sa
}

// run is one life of swanpathd for these tests: the state file loaded
// and marked as running (as cmd/swanpathd does), an engine on a fake data
// plane.
type run struct {
	st *SeqState
	e  *Engine
	dp *fakeDP
}

func start(t *testing.T, path string) run {
	t.Helper()
	st, err := LoadSeqState(path)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := st.MarkRunning(); err != nil {
		t.Fatalf("mark running: %v", err)
	}
	e, dp := newEngine()
	e.KeepSequences(st)
	return run{st, e, dp}
}

// replay adds sas as charon's plugin replays them after a restart.
func (r run) replay(t *testing.T, sas ...*model.SA) {
	t.Helper()
	r.e.Connected(1, 0) // HELLO: the replay begins
	for _, sa := range sas {
		if err := r.e.AddSA(context.Background(), sa); err != nil {
			t.Fatal(err)
		}
	}
	if evs := r.e.checkLifetimes(time.Now()); len(evs) != 0 {
		t.Fatalf("events while charon replays: %+v", evs)
	}
	r.e.ReplayDone(1, 0, 0)
}

// softExpires returns the SPIs of the events, failing on anything but
// soft expires.
func softExpires(t *testing.T, evs []Event) map[uint32]bool {
	t.Helper()
	got := map[uint32]bool{}
	for _, ev := range evs {
		if ev.Kind != EventExpire || ev.Hard {
			t.Fatalf("event %+v, want soft expires only", ev)
		}
		got[ev.SA.SPI] = true
	}
	return got
}

// A crash within the first second after a clean start (before the first
// checkpoint): the numbers of the clean stop must not be reused, so the
// next start adds the margin.
func TestCleanStartThenCrashAddsMargin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.json")
	r1 := start(t, path)
	_ = r1.e.AddSA(context.Background(), outSA(0x100, 1))
	r1.dp.seqs[outSA(0x100, 1).SAID] = 5000
	if err := r1.e.Checkpoint(true); err != nil { // clean stop
		t.Fatal(err)
	}
	r2 := start(t, path)
	r2.replay(t, outSA(0x100, 1))
	if r2.dp.seqStart[0] != 5000 || len(r2.dp.blocked) != 0 {
		t.Fatalf("after a clean stop: starts at %d (blocked %v), want 5000", r2.dp.seqStart[0], r2.dp.blocked)
	}
	// it sends a few packets and swanpathd crashes before any checkpoint
	r2.dp.seqs[outSA(0x100, 1).SAID] = 5100
	r3 := start(t, path)
	r3.replay(t, outSA(0x100, 1))
	if want := uint64(5000 + CrashMargin); r3.dp.seqStart[0] != want || len(r3.dp.blocked) != 0 {
		t.Fatalf("after a crash in the first second: starts at %d (blocked %v), want %d", r3.dp.seqStart[0], r3.dp.blocked, want)
	}
}

// A state file that could not be marked as running: the outbound SAs
// resumed from it would reuse their numbers after a crash, so they come
// back blocked and rekeyed.
func TestUnmarkedStateFileBlocksResumedSAs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "seq.json")
	r1 := start(t, path)
	_ = r1.e.AddSA(context.Background(), outSA(0x100, 1))
	if err := r1.e.Checkpoint(true); err != nil {
		t.Fatal(err)
	}
	st, err := LoadSeqState(path)
	if err != nil {
		t.Fatal(err)
	}
	breakDir(t, dir)
	if err := st.MarkRunning(); err == nil {
		t.Fatal("marking a state file in a directory that is a file succeeded")
	}
	e, dp := newEngine()
	e.KeepSequences(st)
	r := run{st, e, dp}
	r.replay(t, outSA(0x100, 1))
	if !dp.blocked[outSA(0x100, 1).SAID] {
		t.Fatal("SA resumed from a file still marked clean is not blocked")
	}
	if got := softExpires(t, e.checkLifetimes(time.Now())); !got[0x100] {
		t.Fatalf("no soft expire for the blocked SA: %v", got)
	}
}

// breakDir replaces dir by a file: writing the state file then fails,
// whoever runs the test (root too).
func breakDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// An SA charon replays without a record (state file missing or damaged):
// outbound it must not start again at 1, so it is blocked (installed, not
// hard-expired) and charon gets a soft expire once the replay is done;
// inbound its window would be empty, so it is rekeyed too. Its rekey, a
// new SA outside the replay, starts at 1 and takes over the policy.
func TestReplayWithoutRecordBlocksAndRekeys(t *testing.T) {
	for _, c := range []struct {
		name, content string
	}{
		{"missing", ""},
		{"damaged", `{"clean":true,"sas":[{"dst":"192.0.2.2","spi":256,"seq":`},
		{"empty", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "seq.json")
			if c.name != "missing" {
				if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			st, err := LoadSeqState(path)
			if (err != nil) != (c.name != "missing") {
				t.Fatalf("load: %v", err)
			}
			if err := st.MarkRunning(); err != nil {
				t.Fatal(err)
			}
			e, dp := newEngine()
			e.KeepSequences(st)
			_ = e.AddPolicy(ctx, outPolicy(1))
			out, in := outSA(0x100, 1), inSA(0x300, 1)
			run{st, e, dp}.replay(t, out, in)
			if !dp.blocked[out.SAID] || dp.blocked[in.SAID] || dp.seqStart[0] != 0 {
				t.Fatalf("blocked %v, start %v: want the outbound SA blocked", dp.blocked, dp.seqStart)
			}
			if len(dp.expired) != 0 || !dp.sas[out.SAID] || boundSPI(t, dp) != 0x100 {
				t.Fatalf("blocked SA hard-expired (%v), removed, or unbound (0x%x)", dp.expired, boundSPI(t, dp))
			}
			got := softExpires(t, e.checkLifetimes(time.Now()))
			if len(got) != 2 || !got[0x100] || !got[0x300] {
				t.Fatalf("soft expires for %v, want 0x100 and 0x300", got)
			}
			if evs := e.checkLifetimes(time.Now()); len(evs) != 0 {
				t.Fatalf("expires sent twice: %+v", evs)
			}
			// charon rekeys: a new SA, new keys, from 1
			if err := e.AddSA(ctx, outSA(0x200, 1)); err != nil {
				t.Fatal(err)
			}
			if dp.blocked[outSA(0x200, 1).SAID] || dp.seqStart[2] != 0 || boundSPI(t, dp) != 0x200 {
				t.Fatalf("the rekeyed SA: blocked %v, start %d, bound 0x%x", dp.blocked, dp.seqStart[2], boundSPI(t, dp))
			}
			if evs := e.checkLifetimes(time.Now()); len(evs) != 0 {
				t.Fatalf("events for the rekeyed SA: %+v", evs)
			}
		})
	}
}

// An SA added outside a replay is new (new keys): no record, and rightly
// so; it starts at 1, is not blocked and not rekeyed.
func TestFreshSAStartsAtOne(t *testing.T) {
	r := start(t, filepath.Join(t.TempDir(), "seq.json"))
	for _, sa := range []*model.SA{outSA(0x100, 1), inSA(0x300, 1)} {
		if err := r.e.AddSA(context.Background(), sa); err != nil {
			t.Fatal(err)
		}
	}
	if r.dp.seqStart[0] != 0 || r.dp.seqStart[1] != 0 || len(r.dp.blocked) != 0 {
		t.Fatalf("fresh SAs start at %v, blocked %v; want 0 (= 1), none", r.dp.seqStart, r.dp.blocked)
	}
	if evs := r.e.checkLifetimes(time.Now()); len(evs) != 0 {
		t.Fatalf("events for fresh SAs: %+v", evs)
	}
}

// Checkpoints that keep failing: an outbound SA is blocked (and rekeyed)
// once it comes within half the margin of where a crash would resume it,
// never past it; one far below goes on, and so does one added since the
// last checkpoint that worked (after a crash it has no record: it would
// come back blocked). When checkpoints work again, the limit moves up.
func TestFailingCheckpointsBlockBeforeMargin(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	r := start(t, filepath.Join(dir, "seq.json"))
	ctx := context.Background()
	a, b, fresh := outSA(0x100, 1), outSA(0x200, 2), outSA(0x300, 3)
	for _, sa := range []*model.SA{a, b} {
		_ = r.e.AddSA(ctx, sa)
		r.dp.seqs[sa.SAID] = 1000
	}
	if err := r.e.Checkpoint(false); err != nil {
		t.Fatal(err)
	}
	crash, ok := r.st.CrashResume(a.SAID)
	if !ok || crash != 1000+CrashMargin {
		t.Fatalf("a crash would resume at %d (%v), want %d", crash, ok, 1000+CrashMargin)
	}
	breakDir(t, dir)
	r.dp.seqs[a.SAID] = crash - CrashMargin/2 - 1
	if err := r.e.Checkpoint(false); err == nil {
		t.Fatal("checkpoint into a file as directory succeeded")
	}
	_ = r.e.AddSA(ctx, fresh)
	r.dp.seqs[fresh.SAID] = 10 * CrashMargin
	if evs := r.e.checkLifetimes(time.Now()); len(evs) != 0 || len(r.dp.blocked) != 0 {
		t.Fatalf("below half the margin: events %+v, blocked %v", evs, r.dp.blocked)
	}
	// a's traffic goes on while the checkpoints fail
	r.dp.seqs[a.SAID] = crash - CrashMargin/2
	got := softExpires(t, r.e.checkLifetimes(time.Now()))
	if len(got) != 1 || !got[0x100] || !r.dp.blocked[a.SAID] || len(r.dp.blocked) != 1 {
		t.Fatalf("at half the margin: soft expires %v, blocked %v; want 0x100 alone", got, r.dp.blocked)
	}
	if len(r.dp.expired) != 0 || !r.dp.sas[a.SAID] {
		t.Fatal("the blocked SA was hard-expired or removed")
	}
	if evs := r.e.checkLifetimes(time.Now()); len(evs) != 0 {
		t.Fatalf("expire sent twice: %+v", evs)
	}
	// the directory is back: the next checkpoint works and b may go on
	// past its old limit
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Checkpoint(false); err != nil {
		t.Fatal(err)
	}
	r.dp.seqs[b.SAID] = crash + 1
	if evs := r.e.checkLifetimes(time.Now()); len(evs) != 0 || r.dp.blocked[b.SAID] {
		t.Fatalf("after a checkpoint that worked: events %+v, blocked %v", evs, r.dp.blocked)
	}
}

// Inbound SAs: the highest number received is checkpointed with the
// outbound numbers; when charon replays the SA its window starts above it
// (exactly: no margin). After a clean stop that is all; after a crash the
// SA is rekeyed too (what came in after the last checkpoint could be
// replayed).
func TestInboundCheckpointAndWindowStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.json")
	in, out := inSA(0x300, 1), outSA(0x100, 1)
	r1 := start(t, path)
	_ = r1.e.AddSA(context.Background(), in)
	_ = r1.e.AddSA(context.Background(), out)
	r1.dp.seqs[in.SAID], r1.dp.seqs[out.SAID] = 777, 5000
	if err := r1.e.Checkpoint(true); err != nil {
		t.Fatal(err)
	}
	r2 := start(t, path)
	r2.replay(t, inSA(0x300, 1), outSA(0x100, 1))
	if r2.dp.seqStart[0] != 777 || r2.dp.seqStart[1] != 5000 {
		t.Fatalf("after a clean stop: inbound window above %d, outbound from %d; want 777, 5000", r2.dp.seqStart[0], r2.dp.seqStart[1])
	}
	if evs := r2.e.checkLifetimes(time.Now()); len(evs) != 0 {
		t.Fatalf("events after a clean restart: %+v", evs)
	}
	r2.dp.seqs[in.SAID], r2.dp.seqs[out.SAID] = 900, 6000
	if err := r2.e.Checkpoint(false); err != nil {
		t.Fatal(err)
	}
	// crash
	r3 := start(t, path)
	r3.replay(t, inSA(0x300, 1), outSA(0x100, 1))
	if r3.dp.seqStart[0] != 900 || r3.dp.seqStart[1] != 6000+CrashMargin {
		t.Fatalf("after a crash: inbound window above %d, outbound from %d; want 900, %d", r3.dp.seqStart[0], r3.dp.seqStart[1], 6000+CrashMargin)
	}
	if got := softExpires(t, r3.e.checkLifetimes(time.Now())); len(got) != 1 || !got[0x300] || len(r3.dp.blocked) != 0 {
		t.Fatalf("after a crash: soft expires %v (blocked %v), want the inbound SA's alone", got, r3.dp.blocked)
	}
}

// A source that says where a replayed SA stands (the XFRM mirror: the
// kernel's copy) never makes it start lower than the state file, nor the
// state file lower than it.
func TestReplayedSeqStartIsTheHigher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq.json")
	r1 := start(t, path)
	_ = r1.e.AddSA(context.Background(), outSA(0x100, 1))
	_ = r1.e.AddSA(context.Background(), outSA(0x200, 2))
	r1.dp.seqs[outSA(0x100, 1).SAID] = 5000
	r1.dp.seqs[outSA(0x200, 2).SAID] = 5000
	if err := r1.e.Checkpoint(true); err != nil {
		t.Fatal(err)
	}
	r2 := start(t, path)
	above, below := outSA(0x100, 1), outSA(0x200, 2)
	above.SeqStart, below.SeqStart = 7000, 10
	r2.replay(t, above, below)
	if r2.dp.seqStart[0] != 7000 || r2.dp.seqStart[1] != 5000 {
		t.Fatalf("starts at %v, want [7000 5000]", r2.dp.seqStart)
	}
}
