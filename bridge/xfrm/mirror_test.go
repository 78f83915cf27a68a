package xfrm

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/model"
)

// fakeConn is the kernel's XFRM in memory: what a dump returns, the
// notifications to deliver, and the requests swanpathd sent.
type fakeConn struct {
	mu       sync.Mutex
	sas      [][]byte
	pols     [][]byte
	dumps    int
	reqs     []Message
	notes    chan fakeBatch
	dumpedSA [][]byte                            // the messages handed out, to check they were wiped
	doErr    func(typ uint16, data []byte) error // a request's answer, nil: success
}

type fakeBatch struct {
	msgs []Message
	err  error
}

var _ Conn = (*fakeConn)(nil)

func newFakeConn() *fakeConn { return &fakeConn{notes: make(chan fakeBatch, 16)} }

func (f *fakeConn) DumpSAs() ([]Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dumps++
	var out []Message
	for _, b := range f.sas {
		c := append([]byte(nil), b...)
		f.dumpedSA = append(f.dumpedSA, c)
		out = append(out, Message{Type: nl.XFRM_MSG_NEWSA, Data: c})
	}
	return out, nil
}

func (f *fakeConn) DumpPolicies() ([]Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Message
	for _, b := range f.pols {
		out = append(out, Message{Type: nl.XFRM_MSG_NEWPOLICY, Data: append([]byte(nil), b...)})
	}
	return out, nil
}

func (f *fakeConn) Receive(ctx context.Context) ([]Message, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case b := <-f.notes:
		return b.msgs, b.err
	}
}

func (f *fakeConn) Do(typ, flags uint16, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.doErr != nil {
		if err := f.doErr(typ, data); err != nil {
			return err
		}
	}
	f.reqs = append(f.reqs, Message{Type: typ, Data: append([]byte(nil), data...)})
	return nil
}

func (f *fakeConn) Close() error { return nil }

func (f *fakeConn) requests(typ uint16) []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Message
	for _, r := range f.reqs {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// fakeEngine records the calls, as the engine's calls (it wipes keys).
type fakeEngine struct {
	mu       sync.Mutex
	calls    []string
	sas      map[model.SAID]model.SA
	pols     map[model.PolicyID]model.Policy
	refs     map[model.PolicyID]int
	keys     [][]byte       // copies of the keys it got
	replayed chan [2]uint32 // replayed, refused
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{sas: map[model.SAID]model.SA{}, pols: map[model.PolicyID]model.Policy{},
		refs: map[model.PolicyID]int{}, replayed: make(chan [2]uint32, 1)}
}

func (e *fakeEngine) log(f string, a ...any) { e.calls = append(e.calls, fmt.Sprintf(f, a...)) }

func (e *fakeEngine) AddSA(ctx context.Context, sa *model.SA) error {
	defer sa.Wipe()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log("AddSA 0x%08x", sa.SPI)
	e.keys = append(e.keys, append([]byte(nil), sa.EncKey...))
	c := *sa
	c.EncKey, c.IntKey = nil, nil
	e.sas[sa.SAID] = c
	return nil
}

func (e *fakeEngine) UpdateSA(ctx context.Context, id model.SAID, src netip.Addr, newSrc, newDst netip.Addr, sport, dport uint16, encap bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log("UpdateSA 0x%08x %s:%d", id.SPI, newSrc, sport)
	return nil
}

func (e *fakeEngine) DelSA(ctx context.Context, id model.SAID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log("DelSA 0x%08x", id.SPI)
	delete(e.sas, id)
	return nil
}

func (e *fakeEngine) AddPolicy(ctx context.Context, p *model.Policy) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log("AddPolicy %s %s", p.Sel.Dst, p.Dir)
	e.pols[p.PolicyID] = *p
	e.refs[p.PolicyID]++
	return nil
}

func (e *fakeEngine) DelPolicy(ctx context.Context, id model.PolicyID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log("DelPolicy %s %s", id.Sel.Dst, id.Dir)
	if e.refs[id]--; e.refs[id] <= 0 {
		delete(e.pols, id)
		delete(e.refs, id)
	}
	return nil
}

func (e *fakeEngine) Connected(conn uint64, pid uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log("Connected xfrm")
}

func (e *fakeEngine) ReplayDone(conn uint64, replayed, refused uint32) {
	e.mu.Lock()
	e.log("ReplayDone %d/%d", replayed, refused)
	e.mu.Unlock()
	e.replayed <- [2]uint32{replayed, refused}
}

func (e *fakeEngine) Disconnected(conn uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log("Disconnected")
}

func (e *fakeEngine) snapshot() (calls []string, sas int, pols map[model.PolicyID]int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls), len(e.sas), func() map[model.PolicyID]int {
		m := map[model.PolicyID]int{}
		for k, v := range e.refs {
			m[k] = v
		}
		return m
	}()
}

var (
	saIn = stateSpec{src: "198.51.100.2", dst: "192.0.2.1", spi: 0xc1000001, reqid: 7, mode: xfrmModeTunnel,
		aead: "rfc4106(gcm(aes))", icv: 128, key: key(20, 0xa1), window: 32, addTime: 1700000000}
	saOut = stateSpec{src: "192.0.2.1", dst: "198.51.100.2", spi: 0xc2000001, reqid: 7, mode: xfrmModeTunnel,
		aead: "rfc4106(gcm(aes))", icv: 128, key: key(20, 0xb2), window: 32, addTime: 1700000000, softBytes: 5000}
	polOut = policySpec{src: "10.1.0.0/16", dst: "10.2.0.0/16", dir: xfrmDirOut, prio: 1000,
		tmpls: []nl.XfrmUserTmpl{tmpl("192.0.2.1", "198.51.100.2", 7, xfrmModeTunnel, 50)}}
	polIn = policySpec{src: "10.2.0.0/16", dst: "10.1.0.0/16", dir: xfrmDirIn, prio: 1000,
		tmpls: []nl.XfrmUserTmpl{tmpl("198.51.100.2", "192.0.2.1", 7, xfrmModeTunnel, 50)}}
)

type harness struct {
	t      *testing.T
	conn   *fakeConn
	eng    *fakeEngine
	m      *Mirror
	logs   *syncBuf
	stats  map[model.SAID]dataplane.SACounters
	smu    sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, conn *fakeConn) *harness {
	h := &harness{t: t, conn: conn, eng: newFakeEngine(), logs: &syncBuf{}, stats: map[model.SAID]dataplane.SACounters{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.m = New(Config{Log: log, Engine: h.eng, Local: isGW, Dial: func() (Conn, error) { return conn, nil },
		CounterInterval: 10 * time.Millisecond,
		Stats: func(id model.SAID) (dataplane.SACounters, bool) {
			h.smu.Lock()
			defer h.smu.Unlock()
			c, ok := h.stats[id]
			return c, ok
		}})
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.m.Run(ctx) }()
	select {
	case <-h.eng.replayed:
	case err := <-h.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no ReplayDone")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		for _, k := range [][]byte{saIn.key, saOut.key, key(20, 0xc3)} {
			if strings.Contains(h.logs.String(), string(k)) || strings.Contains(h.logs.String(), fmt.Sprintf("%x", k)) {
				t.Error("a key is in the log")
			}
		}
	})
	return h
}

// send delivers notifications and waits until the mirror handled them.
func (h *harness) send(err error, msgs ...Message) {
	h.conn.notes <- fakeBatch{msgs: msgs, err: err}
	// the fake channel is drained when the loop took the batch; one more
	// empty batch proves the previous one was handled
	h.conn.notes <- fakeBatch{}
	deadline := time.Now().Add(5 * time.Second)
	for len(h.conn.notes) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(5 * time.Millisecond)
}

func polIDOf(t *testing.T, p policySpec) model.PolicyID {
	kp, err := parsePolicy(p.msg())
	if err != nil {
		t.Fatal(err)
	}
	id, ok := policyID(kp)
	if !ok {
		t.Fatal("no policy ID")
	}
	return id
}

func saIDOf(s stateSpec) model.SAID {
	return model.SAID{Dst: netip.MustParseAddr(s.dst), SPI: s.spi, Proto: 50}
}

func TestMirrorDumpIsReplay(t *testing.T) {
	conn := newFakeConn()
	stale := policySpec{src: "10.7.0.0/16", dst: "10.8.0.0/16", dir: xfrmDirOut, prio: 99, mark: &[2]uint32{1, 1}}
	conn.sas = [][]byte{saIn.msg(), saOut.msg(), stateSpec{src: "198.51.100.2", dst: "192.0.2.1", spi: 0xc1000009, mode: 1}.msg()}
	conn.pols = [][]byte{polOut.msg(), polIn.msg(), stale.msg()}
	h := start(t, conn)
	calls, nsas, pols := h.eng.snapshot()
	want := []string{"Connected xfrm", "AddSA 0xc1000001", "AddSA 0xc2000001", "AddPolicy 10.2.0.0/16 out",
		"AddPolicy 10.1.0.0/16 in", "ReplayDone 4/0"}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls %q\nwant  %q", calls, want)
	}
	if nsas != 2 || len(pols) != 2 {
		t.Fatalf("%d SAs, %d policies", nsas, len(pols))
	}
	if !h.eng.sas[saIDOf(saIn)].Inbound || h.eng.sas[saIDOf(saOut)].Inbound {
		t.Error("directions wrong")
	}
	if h.eng.sas[saIDOf(saOut)].Soft.Bytes != 5000 {
		t.Error("byte lifetime lost")
	}
	if !bytes.Equal(h.eng.keys[0], saIn.key) {
		t.Error("the engine did not get the key")
	}
	for _, b := range conn.dumpedSA {
		if nonZero(b, saIn.key) || nonZero(b, saOut.key) {
			t.Error("key left in a dumped message")
		}
	}
	// the global pairs (every packet, each family and direction, at
	// priority 0), and with them no pair of a mirrored policy's own
	// (bypass.go: it would break the daemon's MIGRATE); the stale one of
	// an earlier run removed
	adds := conn.requests(nl.XFRM_MSG_UPDPOLICY)
	marks := map[uint32]int{}
	global := map[bypassKey]bool{}
	for _, r := range adds {
		p, err := parsePolicy(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		k := bypassKey{sel: p.info.Sel, dir: p.info.Dir, mark: p.mark}
		if isGlobal(k) {
			if !isBypass(p) || p.info.Priority != 0 {
				t.Errorf("global bypass policy %+v", p.info)
			}
			global[k] = true
			continue
		}
		if !isBypass(p) || p.info.Priority != 999 || len(p.tmpls) != 0 {
			t.Errorf("bypass policy %+v", p.info)
		}
		marks[p.mark]++
	}
	if len(global) != 12 || len(adds) != 12 {
		t.Fatalf("%d bypass policies installed, %d of them global; want the 12 global (2 families, 3 directions, 2 marks) only", len(adds), len(global))
	}
	if len(marks) != 0 {
		t.Errorf("per-policy bypass marks %v, want none", marks)
	}
	dels := conn.requests(nl.XFRM_MSG_DELPOLICY)
	if len(dels) != 1 {
		t.Fatalf("%d bypass policies removed, want the stale one", len(dels))
	}
}

func TestMirrorFollows(t *testing.T) {
	conn := newFakeConn()
	h := start(t, conn)
	// a new SA pair and its policies
	h.send(nil, Message{nl.XFRM_MSG_NEWSA, saIn.msg()}, Message{nl.XFRM_MSG_NEWSA, saOut.msg()},
		Message{nl.XFRM_MSG_NEWPOLICY, polOut.msg()}, Message{nl.XFRM_MSG_NEWPOLICY, polIn.msg()})
	_, nsas, pols := h.eng.snapshot()
	if nsas != 2 || len(pols) != 2 {
		t.Fatalf("%d SAs, %d policies", nsas, len(pols))
	}
	// an update of the policy (higher priority) keeps one reference
	upd := polOut
	upd.prio = 500
	h.send(nil, Message{nl.XFRM_MSG_UPDPOLICY, upd.msg()})
	_, _, pols = h.eng.snapshot()
	if r := pols[polIDOf(t, polOut)]; r != 1 {
		t.Fatalf("policy references %d after update, want 1", r)
	}
	if p := h.eng.pols[polIDOf(t, polOut)]; p.Priority != 500 {
		t.Fatalf("priority %d after update", p.Priority)
	}
	// UDP encapsulation appears (NAT detected late): the SA moves
	moved := saOut
	moved.encap = &[2]uint16{4500, 4501}
	h.send(nil, Message{nl.XFRM_MSG_UPDSA, moved.msg()})
	// counters go back
	h.smu.Lock()
	h.stats[saIDOf(saOut)] = dataplane.SACounters{Bytes: 4242, Packets: 3, SeqUsed: 4, LastUse: time.Unix(1700000100, 0)}
	h.smu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for len(conn.requests(nl.XFRM_MSG_NEWAE)) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ae := conn.requests(nl.XFRM_MSG_NEWAE)
	if len(ae) == 0 {
		t.Fatal("no NEWAE")
	}
	checkAE(t, ae[0].Data, saOut, 4242, 3, 3)
	// the engine's soft expiry goes to the kernel as XFRM_MSG_EXPIRE
	h.m.Notify(engine.Event{Kind: engine.EventExpire, SA: saIDOf(saOut)})
	ex := conn.requests(nl.XFRM_MSG_EXPIRE)
	if len(ex) != 1 {
		t.Fatalf("%d expires", len(ex))
	}
	s, hard, err := parseExpire(ex[0].Data)
	if err != nil || hard || ntohl(s.info.Id.Spi) != saOut.spi {
		t.Fatalf("expire %+v hard=%v err=%v", s.info.Id, hard, err)
	}
	// deletions: DELSA, a hard expire (the kernel deleted the SA itself),
	// DELPOLICY (no bypass policy of its own to remove: the global pairs
	// cover it)
	before := len(conn.requests(nl.XFRM_MSG_DELPOLICY))
	h.send(nil, Message{nl.XFRM_MSG_DELSA, saIn.delMsg()}, Message{nl.XFRM_MSG_EXPIRE, saOut.expireMsg(true)},
		Message{nl.XFRM_MSG_DELPOLICY, polOut.delMsg()})
	calls, nsas, pols := h.eng.snapshot()
	if nsas != 0 || len(pols) != 1 {
		t.Fatalf("%d SAs, %d policies left; calls %q", nsas, len(pols), calls)
	}
	if dels := conn.requests(nl.XFRM_MSG_DELPOLICY)[before:]; len(dels) != 0 {
		t.Fatalf("%d bypass policies removed with the policy, want none", len(dels))
	}
	// someone else removes one of the global pairs: it comes back
	adds := len(conn.requests(nl.XFRM_MSG_UPDPOLICY))
	g := globalBypasses()[1]
	gone := nl.XfrmUserpolicyInfo{Sel: g.sel, Dir: g.dir}
	h.send(nil, Message{nl.XFRM_MSG_DELPOLICY, putAttr(putAttr(structBytes(&nl.XfrmUserpolicyId{Sel: g.sel, Dir: g.dir}),
		nl.XFRMA_POLICY, structBytes(&gone)), nl.XFRMA_MARK, markBytes(g.mark, 1))})
	if again := conn.requests(nl.XFRM_MSG_UPDPOLICY)[adds:]; len(again) != 1 {
		t.Fatalf("%d bypass policies installed again, want 1", len(again))
	}
	// flush: the global pairs come back at once
	adds = len(conn.requests(nl.XFRM_MSG_UPDPOLICY))
	h.send(nil, Message{nl.XFRM_MSG_FLUSHPOLICY, nil})
	if _, _, pols := h.eng.snapshot(); len(pols) != 0 {
		t.Fatalf("%d policies after flush", len(pols))
	}
	if again := conn.requests(nl.XFRM_MSG_UPDPOLICY)[adds:]; len(again) != 12 {
		t.Fatalf("%d global bypass policies installed after the flush, want 12", len(again))
	}
	if !slices.Contains(calls, "UpdateSA 0xc2000001 192.0.2.1:4500") {
		t.Errorf("no move: %q", calls)
	}
}

func checkAE(t *testing.T, b []byte, s stateSpec, bytes_, packets uint64, oseq uint32) {
	t.Helper()
	if len(b) < 48 {
		t.Fatal("short NEWAE")
	}
	if spi := ntohl(native.Uint32(b[16:])); spi != s.spi {
		t.Fatalf("NEWAE for spi 0x%08x", spi)
	}
	if f := native.Uint32(b[40:]); f != xfrmAERval|xfrmAELval {
		t.Errorf("NEWAE flags %d", f)
	}
	attrs, err := parseAttrs(b[48:])
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range attrs {
		switch a.typ {
		case nl.XFRMA_LTIME_VAL:
			c := nl.DeserializeXfrmLifetimeCur(a.data)
			if c.Bytes != bytes_ || c.Packets != packets || c.AddTime != s.addTime || c.UseTime != 1700000100 {
				t.Errorf("lifetime %+v", *c)
			}
		case nl.XFRMA_REPLAY_VAL:
			if r := nl.DeserializeXfrmReplayState(a.data); r.OSeq != oseq {
				t.Errorf("replay %+v, want oseq %d", *r, oseq)
			}
		}
	}
}

// After an overrun the mirror dumps again: what was deleted meanwhile
// goes, what was added comes, what stayed is not added again (that would
// restart its sequence numbers).
func TestMirrorResyncOnOverrun(t *testing.T) {
	conn := newFakeConn()
	conn.sas = [][]byte{saIn.msg(), saOut.msg()}
	conn.pols = [][]byte{polOut.msg(), polIn.msg()}
	h := start(t, conn)
	newSA := saOut
	newSA.spi, newSA.key = 0xc2000002, key(20, 0xc3)
	conn.mu.Lock()
	conn.sas = [][]byte{saOut.msg(), newSA.msg()}
	conn.pols = [][]byte{polOut.msg()}
	conn.mu.Unlock()
	h.send(ErrOverrun)
	calls, nsas, pols := h.eng.snapshot()
	if conn.dumps != 2 {
		t.Fatalf("%d dumps", conn.dumps)
	}
	if nsas != 2 || len(pols) != 1 {
		t.Fatalf("%d SAs, %d policies; calls %q", nsas, len(pols), calls)
	}
	if n := strings.Count(strings.Join(calls, "\n"), "AddSA 0xc2000001"); n != 1 {
		t.Fatalf("the SA that stayed was added %d times", n)
	}
	if !slices.Contains(calls, "DelSA 0xc1000001") || !slices.Contains(calls, "AddSA 0xc2000002") ||
		!slices.Contains(calls, "DelPolicy 10.1.0.0/16 in") {
		t.Fatalf("calls %q", calls)
	}
}

// TestMirrorFlushKeepsGlobalBypass: `ip xfrm policy flush` (libreswan's
// `ipsec restart` runs it after pluto stops and again before pluto
// starts) takes swanpathd's bypass policies with the daemon's. The global
// pairs come back at once, so that the kernel never applies the policies
// pluto installs next with its own copies of the new SAs; the per-policy
// pairs are not removed one by one (the flush took them) and come back
// with the next mirrored policy.
func TestMirrorFlushKeepsGlobalBypass(t *testing.T) {
	conn := newFakeConn()
	conn.sas = [][]byte{saIn.msg(), saOut.msg()}
	conn.pols = [][]byte{polOut.msg(), polIn.msg()}
	h := start(t, conn)
	adds, dels := len(conn.requests(nl.XFRM_MSG_UPDPOLICY)), len(conn.requests(nl.XFRM_MSG_DELPOLICY))

	h.send(nil, Message{nl.XFRM_MSG_FLUSHPOLICY, nil})
	if _, _, pols := h.eng.snapshot(); len(pols) != 0 {
		t.Fatalf("%d policies after flush", len(pols))
	}
	global := map[bypassKey]bool{}
	for _, r := range conn.requests(nl.XFRM_MSG_UPDPOLICY)[adds:] {
		p, err := parsePolicy(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		k := bypassKey{sel: p.info.Sel, dir: p.info.Dir, mark: p.mark}
		if !isGlobal(k) || !isBypass(p) || p.info.Priority != 0 {
			t.Errorf("after the flush: policy %+v installed, want only the global bypass pairs", p.info)
		}
		global[k] = true
	}
	if len(global) != 12 {
		t.Fatalf("%d global bypass policies installed again after the flush, want 12 (2 families, 3 directions, 2 marks)", len(global))
	}
	if n := len(conn.requests(nl.XFRM_MSG_DELPOLICY)) - dels; n != 0 {
		t.Errorf("%d policies deleted after the flush; the flush took them already", n)
	}
	// pluto installs its policies again: mirrored, and with the global
	// pairs back they need no pair of their own (bypass.go)
	adds = len(conn.requests(nl.XFRM_MSG_UPDPOLICY))
	h.send(nil, Message{nl.XFRM_MSG_NEWPOLICY, polOut.msg()})
	if _, _, pols := h.eng.snapshot(); len(pols) != 1 {
		t.Fatalf("%d policies mirrored after the flush, want the one installed again", len(pols))
	}
	if n := len(conn.requests(nl.XFRM_MSG_UPDPOLICY)) - adds; n != 0 {
		t.Fatalf("%d bypass policies for the policy installed after the flush, want none (the global pairs are in)", n)
	}
	// a second flush: all twelve again, not only those changed since
	adds = len(conn.requests(nl.XFRM_MSG_UPDPOLICY))
	h.send(nil, Message{nl.XFRM_MSG_FLUSHPOLICY, nil})
	if n := len(conn.requests(nl.XFRM_MSG_UPDPOLICY)) - adds; n != 12 {
		t.Fatalf("%d global bypass policies after the second flush, want 12", n)
	}
}
