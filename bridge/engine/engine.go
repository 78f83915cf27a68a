// Package engine is swanpathd's control plane core: the model of SAs and
// policies as the IKE daemon installed them, SPI allocation, the binding of
// outbound policies to their newest SA (by reqid, so a rekey switches without
// a gap), lifetimes, acquires and mappings as its own Events, and sequence
// numbers kept across restarts, on top of a dataplane.Dataplane. It knows
// no transport: the charon plugin socket (pluginsock.ForEngine) calls it
// and puts its events on the wire.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// SPIs handed out by GetSPI come from this range, as kernel-netlink does
// for the kernel (0xc0000000-0xcfffffff).
const (
	spiMin = 0xc0000000
	spiMax = 0xcfffffff
)

type saEntry struct {
	sa      model.SA // keys wiped
	seq     uint64   // install order: the newest outbound SA of a reqid wins
	keyBits int      // cipher key length, for display
	added   time.Time
	// expire events sent (see lifetime.go)
	softSent, hardSent bool
	// outbound, stopped for want of a safe sequence number (see seq.go)
	blocked bool
	// the plugin connection that installed or replayed it (0: none), and
	// when it goes unless that changes (reconcile.go)
	owner   uint64
	staleAt time.Time
	// outbound, a rekey's new SA held back until the peer has the new
	// CHILD_SA (handover.go): until when at most, and the SA it replaces
	holdUntil time.Time
	replaces  *saEntry
}

type policyEntry struct {
	p    model.Policy
	refs int // charon installs the same policy once per CHILD_SA using it
	// the outbound SA the data plane protects its traffic with
	bound model.SAID
	has   bool
	// references by plugin connection (0: none), and when the gone
	// connections' go (reconcile.go)
	owners  map[uint64]int
	staleAt time.Time
}

// Engine holds the IPsec model and pushes it into the data plane.
type Engine struct {
	log *slog.Logger
	dp  dataplane.Dataplane
	seq *SeqState // nil: sequence numbers are not kept across restarts

	mu struct {
		sync.Mutex
		sas      map[model.SAID]*saEntry
		policies map[model.PolicyID]*policyEntry
		// by reqid: SAs of both directions (outbound ones are what a
		// rekey rebinds to, all are what query_policy reads), and
		// outbound IPsec policies
		reqSAs   map[uint32][]*saEntry
		outPols  map[uint32]map[model.PolicyID]*policyEntry
		spis     map[uint32]bool // allocated by GetSPI, not yet (or still) used
		seq      uint64
		acquired map[uint32]time.Time // reqid -> last acquire raised
		mapped   map[mappingKey]time.Time
		// failing closed (session.go): plugin connections (true once
		// replayed: a connection whose value is false is replaying what
		// it installed before swanpathd restarted, between HELLO and
		// REPLAY_DONE), whether one ever replayed, the fast path's state
		plugins  map[uint64]bool
		replayed bool
		closed   bool
		// soft expires for SAs that came back without a safe sequence
		// number state, sent once the replay is done (see seq.go)
		pending []model.SAID
		// the last checkpoint of the sequence numbers failed
		ckptFailing bool
		// SAs deleted at their hard lifetime, until charon deletes them
		// too (see lifetime.go)
		gone map[model.SAID]goneSA
		// reconciliation (reconcile.go): the charon PID of each plugin
		// connection (kept after it is gone), the grace period
		pids  map[uint64]uint32
		grace time.Duration
		// new outbound SAs held back (handover.go), and whether
		// watchHolds runs
		holds   []*saEntry
		holding bool
	}
	// charon's names of the SAs, from VICI (names.go)
	names nameTable
	// unit tests call handover themselves (no watchHolds goroutine)
	handoverManual bool
}

// New returns an engine driving dp.
func New(log *slog.Logger, dp dataplane.Dataplane) *Engine {
	e := &Engine{log: log, dp: dp}
	e.mu.sas = make(map[model.SAID]*saEntry)
	e.mu.policies = make(map[model.PolicyID]*policyEntry)
	e.mu.reqSAs = make(map[uint32][]*saEntry)
	e.mu.outPols = make(map[uint32]map[model.PolicyID]*policyEntry)
	e.mu.spis = make(map[uint32]bool)
	e.mu.acquired = make(map[uint32]time.Time)
	e.mu.mapped = make(map[mappingKey]time.Time)
	e.mu.plugins = make(map[uint64]bool)
	e.mu.gone = make(map[model.SAID]goneSA)
	e.mu.pids = make(map[uint64]uint32)
	e.mu.grace = DefaultReconcileGrace
	e.mu.closed = true // as the fast path starts
	return e
}

// GetSPI allocates a random unused SPI.
func (e *Engine) GetSPI(ctx context.Context, src, dst netip.Addr, proto uint8) (uint32, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b [4]byte
	for range 1000 {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("get SPI: %w", err)
		}
		spi := spiMin + binary.BigEndian.Uint32(b[:])%(spiMax-spiMin+1)
		if !e.mu.spis[spi] {
			e.mu.spis[spi] = true
			return spi, nil
		}
	}
	return 0, fmt.Errorf("get SPI: no free SPI found")
}

// AddSA installs sa in the data plane and the model.
func (e *Engine) AddSA(ctx context.Context, sa *model.SA) error {
	defer sa.Wipe()
	e.mu.Lock()
	defer e.mu.Unlock()
	if ent, ok := e.mu.sas[sa.SAID]; ok {
		if conn := connOf(ctx); conn != 0 && e.replayingConnLocked(conn) {
			// a plugin replaying an SA swanpathd kept: it knows it
			ent.owner, ent.staleAt = conn, time.Time{}
		}
		return fmt.Errorf("add SA %s: %w", sa.SAID, model.ErrExists)
	}
	// marks and XFRM interface ids: whether a route-based interface
	// stands for them is the data plane's to say
	if err := sa.ValidateRouted(); err != nil {
		return fmt.Errorf("add SA %s: %w", sa.SAID, err)
	}
	block, rekey := e.resumeLocked(sa)
	info := *sa
	info.EncKey, info.IntKey = nil, nil
	keyBits := model.KeyBits(sa.EncAlg, len(sa.EncKey)) // the salt (nonce) is not key
	if err := e.dp.AddSA(sa); err != nil {
		return err
	}
	e.mu.seq++
	ent := &saEntry{sa: info, seq: e.mu.seq, keyBits: keyBits, added: time.Now(), owner: connOf(ctx)}
	e.mu.sas[sa.SAID] = ent
	e.mu.reqSAs[info.Reqid] = append(e.mu.reqSAs[info.Reqid], ent)
	if info.Inbound {
		e.mu.spis[info.SPI] = true
	}
	if block {
		if err := e.dp.BlockSA(info.SAID); err != nil {
			e.log.Warn("block SA", "spi", fmt.Sprintf("0x%08x", info.SPI), "err", err)
		}
		ent.blocked = true
	}
	if block || rekey {
		ent.softSent = true
		e.mu.pending = append(e.mu.pending, info.SAID)
	}
	e.log.Info("SA added", "spi", fmt.Sprintf("0x%08x", info.SPI), "dir", info.Direction(),
		"src", info.Src, "dst", info.Dst, "reqid", info.Reqid, "encap", info.Encap)
	if info.Inbound {
		return nil
	}
	e.holdLocked(ent)
	return e.rebindLocked(info.Reqid)
}

// UpdateSA moves an SA to new addresses/ports (MOBIKE, NAT remapping). It
// keeps its keys (in the crypto device), counters and sequence numbers.
func (e *Engine) UpdateSA(ctx context.Context, id model.SAID, src netip.Addr, newSrc, newDst netip.Addr, newSport, newDport uint16, encap bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.mu.sas[id]
	if !ok {
		return fmt.Errorf("update SA %s: %w", id, model.ErrNotFound)
	}
	if err := e.dp.MoveSA(id, newSrc, newDst, newSport, newDport, encap); err != nil {
		return err
	}
	delete(e.mu.sas, id)
	ent.sa.Src, ent.sa.Dst, ent.sa.SrcPort, ent.sa.DstPort, ent.sa.Encap = newSrc, newDst, newSport, newDport, encap
	e.mu.sas[ent.sa.SAID] = ent
	if ent.sa.SAID != id && e.seq != nil {
		e.seq.Forget(id)
	}
	e.log.Info("SA moved", "spi", fmt.Sprintf("0x%08x", id.SPI), "dir", ent.sa.Direction(),
		"src", fmt.Sprintf("%s:%d", newSrc, newSport), "dst", fmt.Sprintf("%s:%d", newDst, newDport))
	if ent.sa.Inbound {
		return nil
	}
	// its ID changes with its destination: the policies bound to it follow
	for _, pe := range e.mu.outPols[ent.sa.Reqid] {
		if pe.has && pe.bound == id {
			pe.has = false
		}
	}
	return e.rebindLocked(ent.sa.Reqid)
}

// QuerySA reports an SA's counters.
func (e *Engine) QuerySA(ctx context.Context, id model.SAID) (model.SAStats, error) {
	c, ok := e.dp.SAStats(id)
	if !ok {
		return model.SAStats{}, fmt.Errorf("query SA %s: %w", id, model.ErrNotFound)
	}
	return model.SAStats{Bytes: c.Bytes, Packets: c.Packets, LastUse: c.LastUse}, nil
}

// DelSA removes an SA.
func (e *Engine) DelSA(ctx context.Context, id model.SAID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.mu.sas[id]
	if !ok {
		if e.goneLocked(id) {
			// deleted at its hard lifetime (lifetime.go): answered as
			// the kernel answers a delete of an SA it removed itself
			return fmt.Errorf("delete SA %s: deleted at its hard lifetime: %w", id, model.ErrNotFound)
		}
		if e.mu.spis[id.SPI] {
			// an SPI from GetSPI whose SA never came (the CHILD_SA
			// failed): like the kernel's larval SA, deleting frees it
			delete(e.mu.spis, id.SPI)
			return nil
		}
		return fmt.Errorf("delete SA %s: %w", id, model.ErrNotFound)
	}
	if err := e.deleteLocked(ent); err != nil {
		return err
	}
	e.log.Info("SA deleted", "spi", fmt.Sprintf("0x%08x", id.SPI), "dir", ent.sa.Direction())
	return nil
}

// deleteLocked removes an SA from the model and the data plane (which
// wipes its keys and releases its crypto session). Outbound policies bound
// to it fall back to the next SA of their reqid, or to none (acquire).
func (e *Engine) deleteLocked(ent *saEntry) error {
	id := ent.sa.SAID
	delete(e.mu.sas, id)
	r := ent.sa.Reqid
	e.mu.reqSAs[r] = slices.DeleteFunc(e.mu.reqSAs[r], func(s *saEntry) bool { return s == ent })
	if len(e.mu.reqSAs[r]) == 0 {
		delete(e.mu.reqSAs, r)
	}
	if !ent.sa.Inbound {
		// unbind first so no policy points at the SA being freed
		if err := e.rebindLocked(r); err != nil {
			e.log.Warn("rebind after SA delete", "spi", fmt.Sprintf("0x%08x", id.SPI), "err", err)
		}
	}
	if err := e.dp.DelSA(id); err != nil {
		return err
	}
	if ent.sa.Inbound {
		delete(e.mu.spis, id.SPI)
		for k := range e.mu.mapped {
			if k.spi == id.SPI {
				delete(e.mu.mapped, k)
			}
		}
	} else if e.seq != nil {
		e.seq.Forget(id)
	}
	return nil
}

// FlushSAs removes every SA.
func (e *Engine) FlushSAs(ctx context.Context) error {
	e.mu.Lock()
	ids := slices.Collect(maps.Keys(e.mu.sas))
	e.mu.Unlock()
	for _, id := range ids {
		if err := e.DelSA(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// AddPolicy installs or refreshes a policy.
func (e *Engine) AddPolicy(ctx context.Context, p *model.Policy) error {
	if err := p.ValidateRouted(); err != nil {
		return fmt.Errorf("add policy %s %s: %w", p.Sel.String(), p.Dir.String(), err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	pe, ok := e.mu.policies[p.PolicyID]
	if ok {
		pe.refs++
		pe.owners[connOf(ctx)]++
		e.unindexLocked(pe)
		pe.p = *p // the newer CHILD_SA's template wins, as in kernel-netlink
	} else {
		pe = &policyEntry{p: *p, refs: 1, owners: map[uint64]int{connOf(ctx): 1}}
		e.mu.policies[p.PolicyID] = pe
		e.log.Info("policy added", "sel", p.Sel.String(), "dir", p.Dir.String(), "action", p.Action.String(), "reqid", p.Reqid)
	}
	if isOutIPsec(&pe.p) {
		m := e.mu.outPols[pe.p.Reqid]
		if m == nil {
			m = make(map[model.PolicyID]*policyEntry)
			e.mu.outPols[pe.p.Reqid] = m
		}
		m[pe.p.PolicyID] = pe
	}
	pe.has = false
	if best := e.outSALocked(&pe.p); best != nil {
		pe.bound, pe.has = best.sa.SAID, true
	}
	pol := pe.p
	return e.dp.SetPolicy(dataplane.Binding{Policy: &pol, SA: pe.bound, HasSA: pe.has})
}

// QueryPolicy reports the last use of the policy's SA.
func (e *Engine) QueryPolicy(ctx context.Context, id model.PolicyID) (model.SAStats, error) {
	e.mu.Lock()
	pe, ok := e.mu.policies[id]
	var best model.SAStats
	if ok {
		for _, s := range e.mu.reqSAs[pe.p.Reqid] {
			if c, ok := e.dp.SAStats(s.sa.SAID); ok && c.LastUse.After(best.LastUse) {
				best.LastUse = c.LastUse
			}
		}
	}
	e.mu.Unlock()
	if !ok {
		return model.SAStats{}, fmt.Errorf("query policy %s %s: %w", id.Sel, id.Dir, model.ErrNotFound)
	}
	return best, nil
}

// DelPolicy drops one reference; the policy goes with the last one.
func (e *Engine) DelPolicy(ctx context.Context, id model.PolicyID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	pe, ok := e.mu.policies[id]
	if !ok {
		return fmt.Errorf("delete policy %s %s: %w", id.Sel, id.Dir, model.ErrNotFound)
	}
	pe.dropRef(connOf(ctx))
	if pe.refs--; pe.refs > 0 {
		return nil
	}
	delete(e.mu.policies, id)
	e.unindexLocked(pe)
	e.log.Info("policy deleted", "sel", id.Sel.String(), "dir", id.Dir.String())
	return e.dp.DelPolicy(id)
}

// FlushPolicies removes every policy.
func (e *Engine) FlushPolicies(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var first error
	for id, pe := range e.mu.policies {
		delete(e.mu.policies, id)
		e.unindexLocked(pe)
		if err := e.dp.DelPolicy(id); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func isOutIPsec(p *model.Policy) bool {
	return p.Dir == model.DirOut && p.Action == model.ActionIPsec
}

// unindexLocked takes pe out of the by-reqid index.
func (e *Engine) unindexLocked(pe *policyEntry) {
	if m := e.mu.outPols[pe.p.Reqid]; m != nil {
		delete(m, pe.p.PolicyID)
		if len(m) == 0 {
			delete(e.mu.outPols, pe.p.Reqid)
		}
	}
}

// rebindLocked points every outbound IPsec policy of reqid at the SA that
// protects it now (see outSALocked); the data plane changes only the
// bindings that differ, in place.
func (e *Engine) rebindLocked(reqid uint32) error {
	var first error
	for id, pe := range e.mu.outPols[reqid] {
		var want model.SAID
		has := false
		if best := e.outSALocked(&pe.p); best != nil {
			want, has = best.sa.SAID, true
		}
		if has == pe.has && want == pe.bound {
			continue
		}
		pe.bound, pe.has = want, has
		if err := e.dp.Bind(id, want, has); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// outSALocked is the SA that protects an outbound IPsec policy: the newest
// outbound SA with its reqid (and tunnel destination, when the template
// names one) that is not a rekey's held back (handover.go; unless the
// older one is blocked). nil for other policies or when none is installed
// yet.
//
// The SPI the policy names is not followed: when charon's calls come late
// (a loaded hub, see lab/hub.go) it can be that of a CHILD_SA charon gave
// up, which binding to the newest SA survives; the handover spares the
// rekey's initiator what it would receive before it has its new SA.
func (e *Engine) outSALocked(p *model.Policy) *saEntry {
	if !isOutIPsec(p) {
		return nil
	}
	var best, held *saEntry
	for _, s := range e.mu.reqSAs[p.Reqid] {
		if s.sa.Inbound || p.TmplDst.IsValid() && s.sa.Dst != p.TmplDst {
			continue
		}
		if !s.holdUntil.IsZero() { // a rekey's, not yet (handover.go)
			if held == nil || s.seq > held.seq {
				held = s
			}
			continue
		}
		if best == nil || s.seq > best.seq {
			best = s
		}
	}
	if best == nil || best.blocked && held != nil {
		return held
	}
	return best
}

// SA is one row of ListSAs: the SA (without keys) and its counters.
type SA struct {
	model.SA
	dataplane.SACounters
	KeyBits int
}

// ListSAs returns every SA with counters, ordered by install.
func (e *Engine) ListSAs() []SA {
	e.mu.Lock()
	ents := make([]*saEntry, 0, len(e.mu.sas))
	for _, s := range e.mu.sas {
		ents = append(ents, s)
	}
	e.mu.Unlock()
	slices.SortFunc(ents, func(a, b *saEntry) int { return int(a.seq) - int(b.seq) })
	out := make([]SA, 0, len(ents))
	for _, s := range ents {
		c, _ := e.dp.SAStats(s.sa.SAID)
		out = append(out, SA{SA: s.sa, SACounters: c, KeyBits: s.keyBits})
	}
	return out
}

// Policy is one row of ListPolicies.
type Policy struct {
	model.Policy
	SPI  uint32 // SA bound to an outbound policy, 0 if none
	Refs int
}

// ListPolicies returns every policy with its bound SA.
func (e *Engine) ListPolicies() []Policy {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Policy, 0, len(e.mu.policies))
	for _, pe := range e.mu.policies {
		row := Policy{Policy: pe.p, Refs: pe.refs}
		if best := e.outSALocked(&pe.p); best != nil {
			row.SPI = best.sa.SPI
		}
		out = append(out, row)
	}
	slices.SortFunc(out, func(a, b Policy) int {
		if a.Dir != b.Dir {
			return int(a.Dir) - int(b.Dir)
		}
		return int(a.Priority) - int(b.Priority)
	})
	return out
}

// dropRef takes one reference of conn's off the policy, or one of another
// connection's if conn has none (charon deletes what it installed, whoever
// replayed it).
func (pe *policyEntry) dropRef(conn uint64) {
	if pe.owners[conn] == 0 {
		for c, n := range pe.owners {
			if n > 0 {
				conn = c
				break
			}
		}
	}
	if pe.owners[conn]--; pe.owners[conn] <= 0 {
		delete(pe.owners, conn)
	}
}
