package engine

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// fakeDP records what the engine publishes.
type fakeDP struct {
	sas      map[model.SAID]bool
	bindings []dataplane.Binding
	// SetPolicy and Bind calls
	publishes, binds int
	keysSeen         [][]byte
	seqStart         []uint64
	expired          []model.SAID
	statsRead        map[model.SAID]int // SAStats calls per SA
	closed           bool
	blocked          map[model.SAID]bool
	// per SA: SeqUsed (outbound) or SeqSeen (inbound) the fake reports,
	// instead of 1000 + SPI
	seqs map[model.SAID]uint64
}

var _ dataplane.Dataplane = (*fakeDP)(nil)

func newFake() *fakeDP {
	return &fakeDP{sas: map[model.SAID]bool{}, statsRead: map[model.SAID]int{}, blocked: map[model.SAID]bool{},
		seqs: map[model.SAID]uint64{}}
}

func (f *fakeDP) AddSA(sa *model.SA) error {
	f.sas[sa.SAID] = true
	f.seqStart = append(f.seqStart, sa.SeqStart)
	f.keysSeen = append(f.keysSeen, sa.EncKey)
	return nil
}
func (f *fakeDP) DelSA(id model.SAID) error { delete(f.sas, id); return nil }
func (f *fakeDP) MoveSA(id model.SAID, src, dst netip.Addr, sport, dport uint16, encap bool) error {
	if !f.sas[id] {
		return model.ErrNotFound
	}
	delete(f.sas, id)
	id.Dst = dst
	f.sas[id] = true
	return nil
}
func (f *fakeDP) ExpireSA(id model.SAID) error { f.expired = append(f.expired, id); return nil }
func (f *fakeDP) BlockSA(id model.SAID) error {
	if !f.sas[id] {
		return model.ErrNotFound
	}
	f.blocked[id] = true
	return nil
}
func (f *fakeDP) SetPolicy(b dataplane.Binding) error {
	f.bindings = slices.DeleteFunc(f.bindings, func(x dataplane.Binding) bool { return x.Policy.PolicyID == b.Policy.PolicyID })
	f.bindings = append(f.bindings, b)
	f.publishes++
	return nil
}
func (f *fakeDP) DelPolicy(id model.PolicyID) error {
	n := len(f.bindings)
	f.bindings = slices.DeleteFunc(f.bindings, func(x dataplane.Binding) bool { return x.Policy.PolicyID == id })
	if len(f.bindings) == n {
		return model.ErrNotFound
	}
	return nil
}
func (f *fakeDP) Bind(id model.PolicyID, sa model.SAID, has bool) error {
	for i := range f.bindings {
		if f.bindings[i].Policy.PolicyID == id {
			f.bindings[i].SA, f.bindings[i].HasSA = sa, has
			f.binds++
			return nil
		}
	}
	return model.ErrNotFound
}
func (f *fakeDP) SetFIB(dataplane.FIB) error { return nil }
func (f *fakeDP) SAStats(id model.SAID) (dataplane.SACounters, bool) {
	f.statsRead[id]++
	seq, ok := f.seqs[id]
	if !ok {
		seq = 1000 + uint64(id.SPI)
	}
	return dataplane.SACounters{Bytes: 100, Packets: 2, SeqUsed: seq, SeqSeen: seq, Blocked: f.blocked[id]}, f.sas[id]
}
func (f *fakeDP) Ports() []dataplane.PortInfo      { return nil }
func (f *fakeDP) PortStats() []dataplane.PortStats { return nil }
func (f *fakeDP) Notes() []dataplane.Note          { return nil }
func (f *fakeDP) SetClosed(closed bool)            { f.closed = closed }

var (
	gw   = netip.MustParseAddr("192.0.2.1")
	peer = netip.MustParseAddr("192.0.2.2")
)

func outSA(spi, reqid uint32) *model.SA {
	return &model.SA{
		SAID: model.SAID{Dst: peer, SPI: spi, Proto: model.ProtoESP}, Src: gw,
		Reqid: reqid, Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16,
		EncKey: model.Key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
	}
}

func outPolicy(reqid uint32) *model.Policy {
	return &model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{
		Src: netip.MustParsePrefix("10.1.0.0/24"), Dst: netip.MustParsePrefix("10.2.0.0/24"),
	}, Dir: model.DirOut}, Reqid: reqid, Mode: model.ModeTunnel, TmplSrc: gw, TmplDst: peer}
}

func newEngine() (*Engine, *fakeDP) {
	dp := newFake()
	e := New(slog.New(slog.NewTextHandler(io.Discard, nil)), dp)
	e.handoverManual = true // the tests call handover themselves
	return e, dp
}

// must fails the test on a setup error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func boundSPI(t *testing.T, dp *fakeDP) uint32 {
	t.Helper()
	if len(dp.bindings) != 1 {
		t.Fatalf("published %d bindings, want 1", len(dp.bindings))
	}
	if !dp.bindings[0].HasSA {
		return 0
	}
	return dp.bindings[0].SA.SPI
}

func TestPolicyBindsNewestSAOfReqid(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	if err := e.AddPolicy(ctx, outPolicy(7)); err != nil {
		t.Fatal(err)
	}
	if spi := boundSPI(t, dp); spi != 0 {
		t.Fatalf("policy bound to 0x%x before any SA", spi)
	}
	if err := e.AddSA(ctx, outSA(0x100, 7)); err != nil {
		t.Fatal(err)
	}
	if err := e.AddSA(ctx, outSA(0x999, 8)); err != nil { // other reqid
		t.Fatal(err)
	}
	if spi := boundSPI(t, dp); spi != 0x100 {
		t.Fatalf("bound 0x%x, want 0x100", spi)
	}
	// rekey: the new SA takes over before the old one goes, once the
	// peer sends on the new CHILD_SA (handover.go)
	if err := e.AddSA(ctx, outSA(0x200, 7)); err != nil {
		t.Fatal(err)
	}
	if spi := boundSPI(t, dp); spi != 0x100 {
		t.Fatalf("new SA bound at once (0x%x): want 0x100 until the peer has the new CHILD_SA", spi)
	}
	if n := e.handover(time.Now()); n != 1 || boundSPI(t, dp) != 0x100 {
		t.Fatalf("handed over (%d held, bound 0x%x) with no traffic on a new inbound SA", n, boundSPI(t, dp))
	}
	in := outSA(0x201, 7)
	in.Inbound, in.Dst, in.Src = true, in.Src, in.Dst
	must(t, e.AddSA(ctx, in)) // the fake counts 2 packets on every SA
	if n := e.handover(time.Now()); n != 0 {
		t.Fatalf("%d SAs still held after traffic on the new inbound SA", n)
	}
	if spi := boundSPI(t, dp); spi != 0x200 {
		t.Fatalf("after rekey bound 0x%x, want 0x200", spi)
	}
	if err := e.DelSA(ctx, model.SAID{Dst: peer, SPI: 0x200, Proto: model.ProtoESP}); err != nil {
		t.Fatal(err)
	}
	if spi := boundSPI(t, dp); spi != 0x100 {
		t.Fatalf("after deleting the new SA bound 0x%x, want 0x100", spi)
	}
}

func TestPolicyRefcount(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	p := outPolicy(1)
	for range 2 {
		if err := e.AddPolicy(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.DelPolicy(ctx, p.PolicyID); err != nil {
		t.Fatal(err)
	}
	if len(dp.bindings) != 1 {
		t.Fatalf("policy gone after one of two deletes")
	}
	if err := e.DelPolicy(ctx, p.PolicyID); err != nil {
		t.Fatal(err)
	}
	if len(dp.bindings) != 0 {
		t.Fatalf("policy still published after the last delete")
	}
	if err := e.DelPolicy(ctx, p.PolicyID); err == nil {
		t.Fatal("deleting an absent policy succeeded")
	}
}

func TestKeysWipedAfterAdd(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	sa := outSA(0x100, 1)
	if err := e.AddSA(ctx, sa); err != nil {
		t.Fatal(err)
	}
	for _, b := range sa.EncKey {
		if b != 0 {
			t.Fatalf("key not wiped after AddSA: %v", []byte(sa.EncKey))
		}
	}
	for _, r := range e.ListSAs() {
		if r.EncKey != nil || r.IntKey != nil {
			t.Fatal("ListSAs carries key material")
		}
	}
	if len(dp.keysSeen) != 1 || len(dp.keysSeen[0]) != 20 {
		t.Fatalf("data plane did not get the key")
	}
}

func TestGetSPIUniqueAndInRange(t *testing.T) {
	e, _ := newEngine()
	seen := map[uint32]bool{}
	for range 2000 {
		spi, err := e.GetSPI(context.Background(), peer, gw, model.ProtoESP)
		if err != nil {
			t.Fatal(err)
		}
		if spi < spiMin || spi > spiMax || seen[spi] {
			t.Fatalf("SPI 0x%08x out of range or repeated", spi)
		}
		seen[spi] = true
	}
}

func TestQuerySA(t *testing.T) {
	ctx := context.Background()
	e, _ := newEngine()
	if _, err := e.QuerySA(ctx, model.SAID{Dst: peer, SPI: 5, Proto: 50}); err == nil {
		t.Fatal("query of an absent SA succeeded")
	}
	sa := outSA(0x100, 1)
	must(t, e.AddSA(ctx, sa))
	st, err := e.QuerySA(ctx, sa.SAID)
	if err != nil || st.Bytes != 100 || st.Packets != 2 {
		t.Fatalf("query = %+v, %v", st, err)
	}
}

func TestSequencesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/seq.json"
	for _, clean := range []bool{true, false} {
		st, err := LoadSeqState(path)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := newEngine()
		e.KeepSequences(st)
		must(t, e.AddSA(ctx, outSA(0x100, 1)))
		if err := e.Checkpoint(clean); err != nil {
			t.Fatal(err)
		}
		// "restart": a new engine and data plane, same SA replayed
		st2, err := LoadSeqState(path)
		if err != nil {
			t.Fatal(err)
		}
		e2, dp2 := newEngine()
		e2.KeepSequences(st2)
		must(t, e2.AddSA(ctx, outSA(0x100, 1)))
		want := uint64(1000 + 0x100)
		if !clean {
			want += CrashMargin
		}
		if len(dp2.seqStart) != 1 || dp2.seqStart[0] != want {
			t.Fatalf("clean=%v: replayed SA starts at %v, want %d", clean, dp2.seqStart, want)
		}
		// a new SA starts from the beginning
		must(t, e2.AddSA(ctx, outSA(0x200, 2)))
		if dp2.seqStart[1] != 0 {
			t.Fatalf("new SA starts at %d", dp2.seqStart[1])
		}
	}
	if err := os.WriteFile(path, []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := LoadSeqState(path); err == nil || st == nil || !st.Crashed() {
		t.Fatalf("damaged state file: %v, %v; want an error and an empty state", st, err)
	} else if _, ok := st.Resume(model.SAID{Dst: peer, SPI: 0x100, Proto: model.ProtoESP}); ok {
		t.Fatal("a damaged state file still gives records")
	}
}

func TestDeleteOfAllocatedSPIFreesIt(t *testing.T) {
	ctx := context.Background()
	e, _ := newEngine()
	spi, err := e.GetSPI(ctx, peer, gw, model.ProtoESP)
	if err != nil {
		t.Fatal(err)
	}
	id := model.SAID{Dst: gw, SPI: spi, Proto: model.ProtoESP}
	if err := e.DelSA(ctx, id); err != nil {
		t.Fatalf("deleting the SA of an allocated SPI: %v", err)
	}
	if err := e.DelSA(ctx, id); err == nil {
		t.Fatal("second delete succeeded")
	}
}

func TestLifetimesExpireOnceSoftThenHard(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	sa := outSA(0x100, 1)
	sa.Soft = model.Lifetime{Packets: 2} // the fake reports 2 packets
	sa.Hard = model.Lifetime{Time: time.Minute}
	must(t, e.AddSA(ctx, sa))
	other := outSA(0x200, 2) // no limits
	must(t, e.AddSA(ctx, other))

	now := time.Now()
	evs := e.checkLifetimes(now)
	if len(evs) != 1 || evs[0].Hard || evs[0].SA.SPI != 0x100 || evs[0].Kind != EventExpire {
		t.Fatalf("first check: %+v, want one soft expire of 0x100", evs)
	}
	if evs := e.checkLifetimes(now); len(evs) != 0 {
		t.Fatalf("soft expire raised twice: %+v", evs)
	}
	evs = e.checkLifetimes(now.Add(2 * time.Minute))
	if len(evs) != 1 || !evs[0].Hard || evs[0].SA.SPI != 0x100 {
		t.Fatalf("after the hard time: %+v, want one hard expire", evs)
	}
	if len(dp.expired) != 1 || dp.expired[0].SPI != 0x100 {
		t.Fatalf("the fast path was not told to stop the SA: %+v", dp.expired)
	}
	if evs := e.checkLifetimes(now.Add(3 * time.Minute)); len(evs) != 0 {
		t.Fatalf("hard expire raised twice: %+v", evs)
	}
}

func TestLifetimesReadCountersOnlyWhenTheyMatter(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	timed := outSA(0x100, 1) // as charon sets them: time limits only
	timed.Soft = model.Lifetime{Time: time.Minute}
	timed.Hard = model.Lifetime{Time: 2 * time.Minute}
	must(t, e.AddSA(ctx, timed))
	bytes := outSA(0x200, 2) // a hard byte limit the fake's 100 bytes do not reach
	bytes.Hard = model.Lifetime{Bytes: 1000}
	must(t, e.AddSA(ctx, bytes))
	now := time.Now()

	for i := range 3 {
		if evs := e.checkLifetimes(now.Add(time.Duration(i) * time.Second)); len(evs) != 0 {
			t.Fatalf("check %d: %+v, want nothing due", i, evs)
		}
	}
	if n := dp.statsRead[timed.SAID]; n != 0 {
		t.Errorf("the counters of an SA with time limits only were read %d times before it was due", n)
	}
	if n := dp.statsRead[bytes.SAID]; n != 3 {
		t.Errorf("the counters of an SA with a byte limit were read %d times in 3 checks, want 3", n)
	}
	// its soft time is up: one soft expire (and its counters for the log)
	evs := e.checkLifetimes(now.Add(90 * time.Second))
	if len(evs) != 1 || evs[0].SA != timed.SAID || evs[0].Hard {
		t.Fatalf("after the soft time: %+v, want one soft expire of 0x100", evs)
	}
	if evs := e.checkLifetimes(now.Add(100 * time.Second)); len(evs) != 0 {
		t.Fatalf("soft expire raised twice: %+v", evs)
	}
	evs = e.checkLifetimes(now.Add(3 * time.Minute))
	if len(evs) != 1 || evs[0].SA != timed.SAID || !evs[0].Hard {
		t.Fatalf("after the hard time: %+v, want one hard expire of 0x100", evs)
	}
}

func TestAcquireOncePerReqidWhileNegotiating(t *testing.T) {
	e, _ := newEngine()
	now := time.Now()
	src, dst := netip.MustParseAddr("10.1.0.10"), netip.MustParseAddr("10.2.0.10")
	ev, ok := e.Acquire(now, 7, src, dst)
	if !ok || ev.Kind != EventAcquire || ev.Reqid != 7 || ev.Src != src || ev.Dst != dst {
		t.Fatalf("first acquire: %+v %v", ev, ok)
	}
	if _, ok := e.Acquire(now.Add(time.Second), 7, src, dst); ok {
		t.Fatal("acquire repeated while charon negotiates")
	}
	if _, ok := e.Acquire(now.Add(time.Second), 8, src, dst); !ok {
		t.Fatal("another reqid was held back")
	}
	if _, ok := e.Acquire(now.Add(acquireHold+time.Second), 7, src, dst); !ok {
		t.Fatal("acquire not raised again after the hold")
	}
}

func TestUpdateSAMovesAndRebinds(t *testing.T) {
	ctx := context.Background()
	e, dp := newEngine()
	// a template without a destination: the policy takes its reqid's SA
	// wherever it goes (one that names the peer would let go of an SA
	// moved elsewhere until charon updates the policy too)
	pol := outPolicy(1)
	pol.TmplDst = netip.Addr{}
	must(t, e.AddPolicy(ctx, pol))
	sa := outSA(0x100, 1)
	sa.Encap, sa.SrcPort, sa.DstPort = true, 4500, 4500
	must(t, e.AddSA(ctx, sa))
	if err := e.UpdateSA(ctx, sa.SAID, gw, gw, peer, 4500, 31000, true); err != nil {
		t.Fatal(err)
	}
	rows := e.ListSAs()
	if len(rows) != 1 || rows[0].DstPort != 31000 {
		t.Fatalf("SA not moved: %+v", rows)
	}
	if spi := boundSPI(t, dp); spi != 0x100 {
		t.Fatalf("policy lost its SA after the move: 0x%x", spi)
	}
	// a new destination changes the SA's ID (destination, SPI, protocol):
	// the policy must follow it to the new ID
	moved := netip.MustParseAddr("192.0.2.3")
	if err := e.UpdateSA(ctx, sa.SAID, gw, gw, moved, 4500, 32000, true); err != nil {
		t.Fatal(err)
	}
	newID := model.SAID{Dst: moved, SPI: 0x100, Proto: model.ProtoESP}
	rows = e.ListSAs()
	if len(rows) != 1 || rows[0].SAID != newID || rows[0].DstPort != 32000 {
		t.Fatalf("SA not moved to %s: %+v", newID, rows)
	}
	if b := dp.bindings[0]; !b.HasSA || b.SA != newID {
		t.Fatalf("policy bound to %+v (has %v) after the SA moved to %s", b.SA, b.HasSA, newID)
	}
	if _, err := e.QuerySA(ctx, sa.SAID); err == nil {
		t.Fatal("the SA is still found under its old ID")
	}
	if err := e.UpdateSA(ctx, model.SAID{Dst: peer, SPI: 9, Proto: 50}, gw, gw, peer, 1, 2, true); err == nil {
		t.Fatal("update of an absent SA succeeded")
	}
}

func TestMappingOnlyForInboundSAs(t *testing.T) {
	ctx := context.Background()
	e, _ := newEngine()
	now := time.Now()
	nat := netip.MustParseAddr("192.0.2.2")
	// an outbound SA with the SPI of the inbound one to come: ESP-in-UDP
	// that carries its SPI raises no mapping
	must(t, e.AddSA(ctx, outSA(0x300, 2)))
	if ev, ok := e.Mapping(now, 0x300, nat, 31000); ok {
		t.Fatalf("mapping raised for an outbound SA: %+v", ev)
	}
	in := outSA(0x300, 1)
	in.Inbound, in.Dst, in.Src = true, gw, peer
	must(t, e.AddSA(ctx, in))
	ev, ok := e.Mapping(now, 0x300, nat, 31000)
	if !ok || ev.Kind != EventMapping || ev.SA != in.SAID || ev.Src != nat || ev.NewPort != 31000 {
		t.Fatalf("mapping: %+v %v", ev, ok)
	}
	if _, ok := e.Mapping(now, 0x300, nat, 31000); ok {
		t.Fatal("the same mapping raised twice at once")
	}
	if _, ok := e.Mapping(now, 0x999, nat, 31000); ok {
		t.Fatal("mapping for an unknown SPI")
	}
}

// A rekey (a newer outbound SA of the reqid) moves the policy to it in
// place: Bind, no new policy table; deleting the newer SA moves it back.
func TestRekeyRebindsInPlace(t *testing.T) {
	dp := newFake()
	e := New(slog.New(slog.NewTextHandler(io.Discard, nil)), dp)
	e.handoverManual = true
	ctx := context.Background()
	pol := &model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{Src: netip.MustParsePrefix("10.1.0.0/24"),
		Dst: netip.MustParsePrefix("10.2.0.0/24")}, Dir: model.DirOut}, Reqid: 7, Mode: model.ModeTunnel}
	if err := e.AddPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	mk := func(spi uint32) *model.SA {
		return &model.SA{SAID: model.SAID{Dst: netip.MustParseAddr("192.0.2.2"), SPI: spi, Proto: model.ProtoESP},
			Src: netip.MustParseAddr("192.0.2.1"), Reqid: 7, Mode: model.ModeTunnel,
			EncAlg: model.EncrAESGCM16, EncKey: make(model.Key, 20)}
	}
	old, neu := mk(0x100), mk(0x200)
	for _, sa := range []*model.SA{old, neu} {
		if err := e.AddSA(ctx, sa); err != nil {
			t.Fatal(err)
		}
	}
	e.handover(time.Now().Add(handoverMax)) // the newer one's wait is over
	if dp.publishes != 1 || dp.binds != 2 {
		t.Fatalf("%d policy publishes, %d binds; want 1 and 2", dp.publishes, dp.binds)
	}
	if b := dp.bindings[0]; !b.HasSA || b.SA.SPI != 0x200 {
		t.Fatalf("policy bound to %+v, want the newer SA 0x200", b)
	}
	if err := e.DelSA(ctx, neu.SAID); err != nil {
		t.Fatal(err)
	}
	if b := dp.bindings[0]; !b.HasSA || b.SA.SPI != 0x100 || dp.publishes != 1 {
		t.Fatalf("after deleting 0x200: %+v, %d publishes", b, dp.publishes)
	}
}
