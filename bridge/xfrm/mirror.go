// Package xfrm mirrors the kernel's XFRM SAs and policies into the engine,
// for IKE daemons that install them in the kernel: libreswan's pluto, or
// strongSwan's charon with kernel-netlink. The fast path then does the ESP
// work; the kernel keeps its copies for the daemon to see, never processes
// their ESP (bypass.go) and gets the fast path's counters back (NEWAE).
//
// Pipeline of Run: subscribe (SA, policy, expire, migrate groups) → dump SAs and
// policies and reconcile the engine with them (the first dump is the
// engine's replay: the fast path opens once it is in) → apply each
// notification → every second write the counters back. Netlink multicast
// is lossy: an overrun (ENOBUFS) is followed by a full dump and reconcile.
package xfrm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// ErrOverrun is what Conn.Receive returns when the kernel dropped
// notifications (ENOBUFS): the mirror dumps everything again.
var ErrOverrun = errors.New("XFRM notifications lost (receive buffer overrun)")

// Message is one netlink message: its type and payload (after the header).
type Message struct {
	Type uint16
	Data []byte
}

// Conn is the kernel's XFRM as the mirror uses it. Implementations: the
// netlink sockets (netlink.go) and the tests' fake.
type Conn interface {
	// DumpSAs and DumpPolicies return every SA and policy. The caller
	// wipes the messages' bytes (SAs carry keys).
	DumpSAs() ([]Message, error)
	DumpPolicies() ([]Message, error)
	// Receive blocks for the next notifications, until ctx is done;
	// ErrOverrun when some were lost. The caller wipes the bytes.
	Receive(ctx context.Context) ([]Message, error)
	// Do sends one request and waits for the kernel's answer. Safe for
	// concurrent use with Receive and itself.
	Do(typ uint16, flags uint16, data []byte) error
	Close() error
}

// Engine is what the mirror drives: the engine's SA and policy calls and
// its session hooks (the first dump is a replay).
type Engine interface {
	AddSA(ctx context.Context, sa *model.SA) error
	UpdateSA(ctx context.Context, id model.SAID, src netip.Addr, newSrc, newDst netip.Addr, newSport, newDport uint16, encap bool) error
	DelSA(ctx context.Context, id model.SAID) error
	AddPolicy(ctx context.Context, p *model.Policy) error
	DelPolicy(ctx context.Context, id model.PolicyID) error
	// the session hooks (engine/session.go): the first dump is a replay
	Connected(conn uint64, pid uint32)
	ReplayDone(conn uint64, replayed, refused uint32)
	Disconnected(conn uint64)
}

// ConnID is the session the mirror holds with the engine (the plugin
// server numbers its connections from 1).
const ConnID = ^uint64(0)

// saRec is what the mirror keeps of a mirrored SA (no keys).
type saRec struct {
	id       model.SAID
	markMask uint32
	src      netip.Addr
	sport    uint16
	dport    uint16
	encap    bool
	inbound  bool
	reqid    uint32
	esn      *esn // the kernel keeps an ESN replay state (its bitmap length)
	addTime  uint64
	useTime  uint64
	last     aeCounters // last written
}

// polRec is what the mirror keeps of a mirrored policy.
type polRec struct {
	pol    model.Policy
	bypass []bypassKey
	bprio  uint32
}

// Mirror follows the kernel's XFRM into an Engine.
type Mirror struct {
	log   *slog.Logger
	eng   Engine
	stats func(model.SAID) (dataplane.SACounters, bool)
	local func(netip.Addr) bool
	dial  func() (Conn, error)
	every time.Duration // counters written back

	mu struct {
		sync.Mutex
		conn Conn
		sas  map[model.SAID]*saRec
		// outbound SAs deleted lately, by SPI (moved.go)
		carry map[uint32]carried
	}
	// Run's goroutine only
	pols   map[model.PolicyID]*polRec
	bypass map[bypassKey]uint32 // installed, with their priority
}

// Config says what a Mirror talks to.
type Config struct {
	Log *slog.Logger
	// Engine receives the SAs and policies.
	Engine Engine
	// Stats reads an SA's counters in the fast path.
	Stats func(model.SAID) (dataplane.SACounters, bool)
	// Local says whether an address is the gateway's own: an SA to it is
	// inbound (kernels before 6.10 do not say the direction of an SA).
	Local func(netip.Addr) bool
	// Dial opens the kernel's XFRM (Dial for the real one).
	Dial func() (Conn, error)
	// CounterInterval is how often the counters go back to the kernel's
	// SAs (default 1 s).
	CounterInterval time.Duration
}

// New returns a Mirror; nothing happens until Run.
func New(c Config) *Mirror {
	m := &Mirror{log: c.Log, eng: c.Engine, stats: c.Stats, local: c.Local, dial: c.Dial, every: c.CounterInterval}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.every <= 0 {
		m.every = time.Second
	}
	m.mu.sas = make(map[model.SAID]*saRec)
	m.pols = make(map[model.PolicyID]*polRec)
	m.bypass = make(map[bypassKey]uint32)
	return m
}

// Run mirrors until ctx is done. It returns an error only when the kernel's
// XFRM cannot be opened or first dumped; later failures are logged and
// repaired by dumping again.
func (m *Mirror) Run(ctx context.Context) error {
	conn, err := m.dial()
	if err != nil {
		return fmt.Errorf("xfrm mirror: %w", err)
	}
	m.mu.Lock()
	m.mu.conn = conn
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.mu.conn = nil
		m.mu.Unlock()
		conn.Close()
	}()

	m.eng.Connected(ConnID, 0)
	defer m.eng.Disconnected(ConnID)
	n, failed, err := m.resync(ctx, conn)
	if err != nil {
		return fmt.Errorf("xfrm mirror: first dump: %w", err)
	}
	m.eng.ReplayDone(ConnID, uint32(n), uint32(failed))
	m.log.Info("xfrm mirror: kernel SAs and policies mirrored", "mirrored", n, "refused", failed)

	type batch struct {
		msgs []Message
		err  error
	}
	rcv := make(chan batch)
	var wg sync.WaitGroup
	wg.Add(1)
	rctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	go func() {
		defer wg.Done()
		for {
			msgs, err := conn.Receive(rctx)
			if rctx.Err() != nil {
				wipeMsgs(msgs)
				return
			}
			select {
			case rcv <- batch{msgs, err}:
			case <-rctx.Done():
				wipeMsgs(msgs)
				return
			}
		}
	}()
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.writeCounters(conn)
			return nil
		case <-t.C:
			m.writeCounters(conn)
		case b := <-rcv:
			for _, msg := range b.msgs {
				m.handle(ctx, msg)
			}
			wipeMsgs(b.msgs)
			if b.err != nil {
				if errors.Is(b.err, ErrOverrun) {
					m.log.Warn("xfrm mirror: notifications lost, dumping everything again")
				} else {
					m.log.Warn("xfrm mirror: receive failed, dumping everything again", "err", b.err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
				if _, _, err := m.resync(ctx, conn); err != nil {
					m.log.Error("xfrm mirror: resync failed", "err", err)
				}
			}
		}
	}
}

func wipeMsgs(msgs []Message) {
	for _, msg := range msgs {
		clear(msg.Data)
	}
}

// handle applies one notification.
func (m *Mirror) handle(ctx context.Context, msg Message) {
	switch msg.Type {
	case nl.XFRM_MSG_NEWSA, nl.XFRM_MSG_UPDSA:
		s, err := parseState(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable SA notification", "err", err)
			return
		}
		_ = m.applySA(ctx, s)
	case nl.XFRM_MSG_DELSA:
		k, err := parseSAID(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable SA deletion", "err", err)
			return
		}
		m.delSA(ctx, model.SAID{Dst: k.dst, SPI: k.spi, Proto: k.proto, Mark: k.mark})
	case nl.XFRM_MSG_EXPIRE:
		s, hard, err := parseExpire(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable expire", "err", err)
			return
		}
		s.wipe()
		if hard {
			// the kernel deleted its SA without a DELSA
			k := s.said()
			m.delSA(ctx, model.SAID{Dst: k.dst, SPI: k.spi, Proto: k.proto, Mark: k.mark})
		}
	case nl.XFRM_MSG_FLUSHSA:
		m.mu.Lock()
		ids := slices.Collect(maps.Keys(m.mu.sas))
		m.mu.Unlock()
		for _, id := range ids {
			m.delSA(ctx, id)
		}
	case nl.XFRM_MSG_NEWPOLICY, nl.XFRM_MSG_UPDPOLICY:
		p, err := parsePolicy(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable policy notification", "err", err)
			return
		}
		_ = m.applyPolicy(ctx, p)
	case nl.XFRM_MSG_DELPOLICY:
		p, err := parsePolicyDel(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable policy deletion", "err", err)
			return
		}
		m.delPolicyMsg(ctx, p)
	case nl.XFRM_MSG_POLEXPIRE:
		p, hard, err := parsePolExpire(msg.Data)
		if err == nil && hard {
			m.delPolicyMsg(ctx, p)
		}
	case nl.XFRM_MSG_FLUSHPOLICY:
		// the flush took swanpathd's bypass policies too: the per-policy
		// pairs go with the mirrored policies, the global pairs come back
		// at once (`ipsec restart` flushes before and after pluto: without
		// them the kernel would encrypt with the next SAs' keys)
		clear(m.bypass)
		for id, rec := range m.pols {
			rec.bypass = nil // gone with the flush
			m.delPolicy(ctx, id)
		}
		m.reinstallGlobals()
	case nl.XFRM_MSG_MIGRATE:
		mg, err := parseMigrate(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable migrate", "err", err)
			return
		}
		m.migrate(ctx, mg) // migrate.go
	default:
		m.log.Debug("xfrm mirror: notification ignored", "type", msg.Type)
	}
}

// applySA mirrors a state from a dump or a NEWSA/UPDSA: a new SA goes to
// the engine, a known one that moved (UPDSA of addresses or encapsulation
// ports) is moved. It reports whether the SA is mirrored.
func (m *Mirror) applySA(ctx context.Context, s *kstate) bool {
	defer s.wipe()
	k := s.said()
	id := model.SAID{Dst: k.dst, SPI: k.spi, Proto: k.proto, Mark: s.mark}
	m.mu.Lock()
	rec, ok := m.mu.sas[id]
	m.mu.Unlock()
	if ok {
		src := addr(s.info.Saddr, s.info.Family)
		var sport, dport uint16
		encap := s.encap != nil
		if encap {
			sport, dport = ntohs(s.encap.EncapSport), ntohs(s.encap.EncapDport)
		}
		if src == rec.src && encap == rec.encap && sport == rec.sport && dport == rec.dport {
			return true
		}
		if err := m.eng.UpdateSA(ctx, id, rec.src, src, id.Dst, sport, dport, encap); err != nil {
			m.log.Warn("xfrm mirror: moving SA failed", "spi", spiStr(id.SPI), "err", err)
			return true
		}
		m.mu.Lock()
		rec.src, rec.encap, rec.sport, rec.dport = src, encap, sport, dport
		m.mu.Unlock()
		return true
	}
	sa, err := toSA(s, m.local)
	if errors.Is(err, errLarval) {
		m.log.Debug("xfrm mirror: larval SA skipped", "spi", spiStr(id.SPI))
		return false
	}
	if err != nil {
		m.log.Warn("xfrm mirror: SA refused", "spi", spiStr(id.SPI), "reqid", s.info.Reqid, "err", err)
		return false
	}
	rec = &saRec{id: sa.SAID, markMask: sa.MarkMask, src: sa.Src, sport: sa.SrcPort, dport: sa.DstPort,
		encap: sa.Encap, inbound: sa.Inbound, reqid: sa.Reqid, esn: s.esn,
		addTime: s.info.Curlft.AddTime, useTime: s.info.Curlft.UseTime}
	rec.last = aeCounters{bytes: s.info.Curlft.Bytes, packets: s.info.Curlft.Packets}
	m.carrySeq(sa)             // moved.go
	err = m.eng.AddSA(ctx, sa) // wipes sa's keys
	sa.Wipe()
	if err != nil && !errors.Is(err, model.ErrExists) {
		m.log.Warn("xfrm mirror: SA refused by the engine", "spi", spiStr(id.SPI), "reqid", rec.reqid, "err", err)
		return false
	}
	m.mu.Lock()
	m.mu.sas[id] = rec
	m.mu.Unlock()
	return true
}

func (m *Mirror) delSA(ctx context.Context, id model.SAID) {
	m.mu.Lock()
	rec, ok := m.mu.sas[id]
	delete(m.mu.sas, id)
	m.mu.Unlock()
	if !ok {
		return
	}
	m.rememberSeq(rec) // moved.go
	if err := m.eng.DelSA(ctx, id); err != nil && !errors.Is(err, model.ErrNotFound) {
		m.log.Warn("xfrm mirror: deleting SA failed", "spi", spiStr(id.SPI), "err", err)
	}
}

// applyPolicy mirrors a policy from a dump or NEWPOLICY/UPDPOLICY, and
// keeps swanpathd's bypass policies for it (bypass.go). It reports whether
// the policy is mirrored.
func (m *Mirror) applyPolicy(ctx context.Context, p *kpolicy) bool {
	mp, err := toPolicy(p)
	if errors.Is(err, errNotMirrored) {
		return false
	}
	if err != nil {
		m.log.Warn("xfrm mirror: policy refused", "err", err)
		// an update the fast path cannot follow: the old one goes
		if id, ok := policyID(p); ok {
			m.delPolicy(ctx, id)
		}
		return false
	}
	var want []bypassKey
	if mp.Action == model.ActionIPsec && !m.globalsIn() {
		want = bypassesFor(p) // only without the global pairs (bypass.go)
	}
	rec, ok := m.pols[mp.PolicyID]
	if ok && rec.pol == *mp {
		m.setBypass(rec, want, bypassPriority(mp.Priority)) // after a resync: back if gone, gone if not wanted
		return true
	}
	// a replaced policy is added again and its old reference dropped:
	// the engine counts references and swaps the policy in place
	if err := m.eng.AddPolicy(ctx, mp); err != nil {
		m.log.Warn("xfrm mirror: policy refused by the engine", "sel", mp.Sel.String(), "dir", mp.Dir.String(), "err", err)
		if ok {
			m.delPolicy(ctx, mp.PolicyID)
		}
		return false
	}
	if ok {
		if err := m.eng.DelPolicy(ctx, mp.PolicyID); err != nil {
			m.log.Warn("xfrm mirror: replacing policy", "sel", mp.Sel.String(), "err", err)
		}
	} else {
		rec = &polRec{}
		m.pols[mp.PolicyID] = rec
	}
	rec.pol = *mp
	m.setBypass(rec, want, bypassPriority(mp.Priority))
	return true
}

func policyID(p *kpolicy) (model.PolicyID, bool) {
	sel, err := toSelector(&p.info.Sel)
	if err != nil || p.info.Dir > xfrmDirFwd {
		return model.PolicyID{}, false
	}
	return model.PolicyID{Sel: sel, Dir: model.Dir(p.info.Dir), Mark: p.mark, MarkMask: p.markMask, IfID: p.ifID}, true
}

func (m *Mirror) delPolicyMsg(ctx context.Context, p *kpolicy) {
	if isBypass(p) {
		// ours: gone by our own hand, or someone else's (then it comes
		// back at once if a mirrored policy still wants it)
		k := bypassKey{sel: p.info.Sel, dir: p.info.Dir, mark: p.mark}
		delete(m.bypass, k)
		if isGlobal(k) {
			m.log.Warn("xfrm mirror: a global bypass policy was removed by someone else; installing it again", "dir", k.dir)
			m.reinstallGlobals()
			return
		}
		for _, rec := range m.pols {
			if slices.Contains(rec.bypass, k) {
				m.log.Warn("xfrm mirror: a bypass policy was removed by someone else; installing it again", "sel", rec.pol.Sel.String(), "dir", rec.pol.Dir.String())
				m.setBypass(rec, rec.bypass, rec.bprio)
				break
			}
		}
		return
	}
	if id, ok := policyID(p); ok {
		m.delPolicy(ctx, id)
	}
}

func (m *Mirror) delPolicy(ctx context.Context, id model.PolicyID) {
	rec, ok := m.pols[id]
	if !ok {
		return
	}
	delete(m.pols, id)
	if err := m.eng.DelPolicy(ctx, id); err != nil && !errors.Is(err, model.ErrNotFound) {
		m.log.Warn("xfrm mirror: deleting policy failed", "sel", id.Sel.String(), "dir", id.Dir.String(), "err", err)
	}
	m.setBypass(rec, nil, 0)
}

// reinstallGlobals installs the global bypass pairs the kernel lacks
// (after someone removed one, or flushed every policy).
func (m *Mirror) reinstallGlobals() {
	m.mu.Lock()
	conn := m.mu.conn
	m.mu.Unlock()
	if conn == nil || m.globalsIn() {
		return
	}
	if err := m.installGlobals(conn); err != nil {
		m.log.Error("xfrm mirror: global bypass policies not back", "err", err)
		return
	}
	m.log.Info("xfrm mirror: global bypass policies installed again")
}

// setBypass makes rec's bypass policies want at priority prio.
func (m *Mirror) setBypass(rec *polRec, want []bypassKey, prio uint32) {
	m.mu.Lock()
	conn := m.mu.conn
	m.mu.Unlock()
	keep := make(map[bypassKey]bool, len(want))
	for _, k := range want {
		keep[k] = true
		if isGlobal(k) {
			continue // a daemon policy for every packet: the global pair has it
		}
		if p, ok := m.bypass[k]; ok && p == prio {
			continue
		}
		if err := conn.Do(nl.XFRM_MSG_UPDPOLICY, 0, bypassAdd(k, prio)); err != nil {
			m.log.Error("xfrm mirror: installing bypass policy failed: the kernel may encrypt the gateway's own traffic of this selector",
				"sel", rec.pol.Sel.String(), "dir", rec.pol.Dir.String(), "err", err)
			continue
		}
		m.bypass[k] = prio
	}
	for _, k := range rec.bypass {
		if keep[k] || isGlobal(k) {
			continue
		}
		if err := conn.Do(nl.XFRM_MSG_DELPOLICY, 0, bypassDel(k)); err != nil {
			m.log.Warn("xfrm mirror: removing bypass policy failed", "sel", rec.pol.Sel.String(), "dir", rec.pol.Dir.String(), "err", err)
		}
		delete(m.bypass, k)
	}
	rec.bypass, rec.bprio = want, prio
}

// resync dumps the kernel's SAs and policies and makes the engine and the
// bypass policies agree with them. SAs already mirrored stay as they are
// (re-adding one would restart its sequence numbers).
func (m *Mirror) resync(ctx context.Context, conn Conn) (mirrored, refused int, err error) {
	sas, err := conn.DumpSAs()
	defer wipeMsgs(sas)
	if err != nil {
		return 0, 0, fmt.Errorf("dump SAs: %w", err)
	}
	pols, err := conn.DumpPolicies()
	if err != nil {
		return 0, 0, fmt.Errorf("dump policies: %w", err)
	}
	seen := make(map[model.SAID]bool)
	for _, msg := range sas {
		s, err := parseState(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable SA in dump", "err", err)
			refused++
			continue
		}
		k := s.said()
		if m.applySA(ctx, s) {
			mirrored++
			seen[model.SAID{Dst: k.dst, SPI: k.spi, Proto: k.proto, Mark: k.mark}] = true
		} else if s.aead != nil || s.crypt != nil || s.auth != nil {
			refused++
		}
	}
	m.mu.Lock()
	var gone []model.SAID
	for id := range m.mu.sas {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	m.mu.Unlock()
	for _, id := range gone {
		m.delSA(ctx, id)
	}

	// swanpathd's bypass policies as the kernel has them: those no
	// mirrored policy wants (an earlier run's) go, missing ones come back
	var kps []*kpolicy
	clear(m.bypass)
	for _, msg := range pols {
		p, err := parsePolicy(msg.Data)
		if err != nil {
			m.log.Warn("xfrm mirror: unreadable policy in dump", "err", err)
			refused++
			continue
		}
		if isBypass(p) {
			m.bypass[bypassKey{sel: p.info.Sel, dir: p.info.Dir, mark: p.mark}] = p.info.Priority
			continue
		}
		kps = append(kps, p)
	}
	// the global pairs first: with them in, the daemon's policies need
	// no pair of their own (bypass.go)
	if err := m.installGlobals(conn); err != nil {
		return mirrored, refused, err
	}
	seenPol := make(map[model.PolicyID]bool)
	for _, p := range kps {
		if _, err := toPolicy(p); errors.Is(err, errNotMirrored) {
			continue
		}
		if m.applyPolicy(ctx, p) {
			mirrored++
			if id, ok := policyID(p); ok {
				seenPol[id] = true
			}
		} else {
			refused++
		}
	}
	for id := range m.pols {
		if !seenPol[id] {
			m.delPolicy(ctx, id)
		}
	}
	wanted := make(map[bypassKey]bool)
	for _, rec := range m.pols {
		for _, k := range rec.bypass {
			wanted[k] = true
		}
	}
	for _, k := range globalBypasses() {
		wanted[k] = true
	}
	for k := range m.bypass {
		if wanted[k] {
			continue
		}
		if err := conn.Do(nl.XFRM_MSG_DELPOLICY, 0, bypassDel(k)); err != nil {
			m.log.Warn("xfrm mirror: removing stale bypass policy failed", "err", err)
		}
		delete(m.bypass, k)
	}
	return mirrored, refused, nil
}

func spiStr(spi uint32) string { return fmt.Sprintf("0x%08x", spi) }
