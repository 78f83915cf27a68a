package engine

import (
	"context"
	"fmt"
	"time"
)

// Reconciliation with charon. Linux keeps the XFRM states of a charon that
// died until their lifetimes end; swanpathd did the same, holding their keys
// and fast path slots for up to hours. So every SA and policy remembers the
// plugin connection that installed it (or replayed it), and that
// connection's charon PID from its HELLO. When a plugin finishes its replay
// and swanpathd holds SAs or policies of connections that are gone, and
// this plugin is another charon than the one that installed them (another
// PID, or it replayed nothing although swanpathd holds SAs: a charon that
// restarted and knows nothing), those leftovers are marked; after the grace
// period (SetReconcileGrace) each that is still only the dead connections'
// is removed with a log line, unless charon's VICI listing (when current)
// names it.
//
// What the running charon installs is never removed: an SA it adds during
// the grace period is its own, and a policy it adds again (same selector)
// becomes its own, only the dead connections' references to it dropped.

// DefaultReconcileGrace is how long leftovers of a dead charon stay in the
// fast path once another charon has connected. The peer goes on sending
// over the old SAs until it moves to the new ones: at once when the new
// charon initiates (INITIAL_CONTACT makes the peer drop its old IKE_SA),
// otherwise when its DPD finds the old IKE_SA dead: a dpd_delay (commonly
// 30 s) and charon's retransmission schedule (retransmit_timeout 4 s,
// base 1.8, 5 tries: 165 s) before it gives up and re-establishes. Four
// minutes cover that with a margin; traffic that still flows over the old
// SAs meanwhile is not cut.
const DefaultReconcileGrace = 4 * time.Minute

// connKey carries the plugin connection of a request in its context.
type connKey struct{}

// WithConn returns ctx carrying plugin connection conn: what AddSA and
// AddPolicy install with it is that connection's.
func WithConn(ctx context.Context, conn uint64) context.Context {
	return context.WithValue(ctx, connKey{}, conn)
}

func connOf(ctx context.Context) uint64 {
	c, _ := ctx.Value(connKey{}).(uint64)
	return c
}

// SetReconcileGrace sets the grace period of the reconciliation (0
// disables it: leftovers go at their hard lifetime). Set before use.
func (e *Engine) SetReconcileGrace(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mu.grace = d
}

// liveLocked reports whether plugin connection conn is connected.
func (e *Engine) liveLocked(conn uint64) bool {
	_, ok := e.mu.plugins[conn]
	return ok
}

// reconcileStartLocked runs at a plugin's REPLAY_DONE: it marks what only
// gone connections installed, if this plugin is another charon.
func (e *Engine) reconcileStartLocked(conn uint64, replayed uint32, now time.Time) {
	if e.mu.grace <= 0 {
		return
	}
	pid := e.mu.pids[conn]
	another := false // is another charon than the one of the leftovers
	var sas, pols int
	orphan := func(owner uint64) bool {
		if owner == conn || e.liveLocked(owner) {
			return false
		}
		if replayed == 0 && len(e.mu.sas) > 0 || e.mu.pids[owner] != pid {
			another = true
		}
		return true
	}
	for _, s := range e.mu.sas {
		if orphan(s.owner) {
			sas++
		}
	}
	for _, pe := range e.mu.policies {
		for owner := range pe.owners {
			if orphan(owner) {
				pols++
				break
			}
		}
	}
	if !another || sas+pols == 0 {
		return
	}
	at := now.Add(e.mu.grace)
	for _, s := range e.mu.sas {
		if s.owner != conn && !e.liveLocked(s.owner) && s.staleAt.IsZero() {
			s.staleAt = at
		}
	}
	for _, pe := range e.mu.policies {
		if pe.staleAt.IsZero() {
			for owner := range pe.owners {
				if owner != conn && !e.liveLocked(owner) {
					pe.staleAt = at
					break
				}
			}
		}
	}
	e.log.Warn("another charon connected: what the previous one installed and this one does not know is removed after the grace period",
		"pid", pid, "replayed", replayed, "sas", sas, "policies", pols, "grace", e.mu.grace)
}

// reconcileLocked removes the marked leftovers whose grace period is over.
func (e *Engine) reconcileLocked(now time.Time) {
	for _, s := range e.mu.sas {
		if s.staleAt.IsZero() || now.Before(s.staleAt) {
			continue
		}
		s.staleAt = time.Time{}
		if e.liveLocked(s.owner) {
			continue // replayed by a connected plugin since
		}
		if n, ok := e.viciKnowsSA(s); ok {
			e.log.Info("SA of a previous charon kept: charon's VICI lists it", "spi", fmt.Sprintf("0x%08x", s.sa.SPI),
				"dir", s.sa.Direction(), "conn", n.Conn, "child", n.Child)
			continue
		}
		if err := e.deleteLocked(s); err != nil {
			e.log.Warn("remove SA of a previous charon", "spi", fmt.Sprintf("0x%08x", s.sa.SPI), "err", err)
			continue
		}
		e.log.Warn("SA removed: installed by a charon that is gone, unknown to the running one",
			"spi", fmt.Sprintf("0x%08x", s.sa.SPI), "dir", s.sa.Direction(), "reqid", s.sa.Reqid,
			"src", s.sa.Src, "dst", s.sa.Dst, "installed_by_pid", e.mu.pids[s.owner])
	}
	for id, pe := range e.mu.policies {
		if pe.staleAt.IsZero() || now.Before(pe.staleAt) {
			continue
		}
		pe.staleAt = time.Time{}
		live, dead := 0, 0
		for owner, n := range pe.owners {
			if e.liveLocked(owner) {
				live += n
			} else {
				dead += n
			}
		}
		if live > 0 {
			// the running charon installed it too: only its references stay
			for owner := range pe.owners {
				if !e.liveLocked(owner) {
					delete(pe.owners, owner)
				}
			}
			pe.refs = live
			continue
		}
		if _, ok := e.NamesOfReqid(pe.p.Reqid); ok && pe.p.Reqid != 0 {
			e.log.Info("policy of a previous charon kept: charon's VICI lists a CHILD_SA with its reqid",
				"sel", id.Sel.String(), "dir", id.Dir.String(), "reqid", pe.p.Reqid)
			continue
		}
		delete(e.mu.policies, id)
		e.unindexLocked(pe)
		if err := e.dp.DelPolicy(id); err != nil {
			e.log.Warn("remove policy of a previous charon", "sel", id.Sel.String(), "dir", id.Dir.String(), "err", err)
			continue
		}
		e.log.Warn("policy removed: installed by a charon that is gone, unknown to the running one",
			"sel", id.Sel.String(), "dir", id.Dir.String(), "action", pe.p.Action.String(), "reqid", pe.p.Reqid,
			"refs", dead)
	}
}

// viciKnowsSA reports whether charon's current VICI listing has s (by SPI
// and direction, and reqid when listed).
func (e *Engine) viciKnowsSA(s *saEntry) (Names, bool) {
	t := &e.names
	t.Lock()
	known := t.known
	t.Unlock()
	if !known {
		return Names{}, false
	}
	return e.NamesOfSA(&s.sa)
}
