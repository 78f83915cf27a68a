package engine

// Make before break: a rekey's new outbound SA carries traffic once the
// peer shows that it has installed the new CHILD_SA, not as soon as it is
// installed here.
//
// The responder of a CREATE_CHILD_SA installs both new SAs before it
// answers; the initiator installs its own only when the answer arrives.
// A responder that sends on the new outbound SA at once (pluto does, as
// does the kernel's choice of the newest state) loses what arrives at the
// initiator before that: RFC 7296 (2.8) has the responder wait until it
// receives traffic on the new SA. So an outbound SA added while an older
// outbound SA of its reqid (and destination) still carries traffic is
// held back until the first of:
//   - a packet arrives on an inbound SA of the reqid newer than the SA
//     it replaces: the peer sends on the new CHILD_SA, so it has it;
//   - the older SA goes (the peer's DELETE of it, or its hard lifetime)
//     or is blocked;
//   - handoverMax passes.
// Meanwhile the older SA keeps carrying traffic: the peer still has it.
// As initiator (the answer came before the new SAs) nothing is lost by
// the wait either: the older SA is valid until its DELETE.
// An older SA that another plugin connection installed (a charon that
// was killed and whose successor brought the CHILD_SA up again in a new
// IKE_SA) is not the new SA's predecessor in a rekey: the peer has
// likely dropped it with the IKE_SA it replaced, so no wait for it.

import (
	"fmt"
	"time"
)

const (
	// handoverMax is how long a new outbound SA is held back at most
	handoverMax = 2 * time.Second
	// handoverPoll is how often the inbound SAs are read meanwhile
	handoverPoll = 5 * time.Millisecond
)

// holdLocked holds ent (a new outbound SA) back when an older outbound
// SA of its reqid and destination, installed through the same plugin
// connection, carries traffic (one not blocked).
func (e *Engine) holdLocked(ent *saEntry) {
	var older *saEntry
	for _, s := range e.mu.reqSAs[ent.sa.Reqid] {
		if s == ent || s.sa.Inbound || s.sa.Dst != ent.sa.Dst || s.blocked || !s.holdUntil.IsZero() ||
			s.owner != ent.owner {
			continue
		}
		if older == nil || s.seq > older.seq {
			older = s
		}
	}
	if older == nil {
		return
	}
	ent.holdUntil, ent.replaces = time.Now().Add(handoverMax), older
	e.mu.holds = append(e.mu.holds, ent)
	if !e.mu.holding && !e.handoverManual {
		e.mu.holding = true
		go e.watchHolds()
	}
}

// watchHolds runs handover until no SA is held.
func (e *Engine) watchHolds() {
	t := time.NewTicker(handoverPoll)
	defer t.Stop()
	for now := range t.C {
		if e.handover(now) == 0 {
			return
		}
	}
}

// handover releases the held SAs whose peer has shown it has the new
// CHILD_SA (or whose wait is over) and rebinds their policies; it returns
// how many are still held (0: watchHolds stops).
func (e *Engine) handover(now time.Time) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	kept := e.mu.holds[:0]
	for _, ent := range e.mu.holds {
		why := e.releaseLocked(ent, now)
		if why == "" {
			kept = append(kept, ent)
			continue
		}
		ent.holdUntil, ent.replaces = time.Time{}, nil
		if e.mu.sas[ent.sa.SAID] != ent {
			continue // deleted meanwhile
		}
		e.log.Info("rekey: outbound SA takes over", "spi", fmt.Sprintf("0x%08x", ent.sa.SPI),
			"reqid", ent.sa.Reqid, "after", now.Sub(ent.added).Round(time.Millisecond), "because", why)
		if err := e.rebindLocked(ent.sa.Reqid); err != nil {
			e.log.Warn("rebind after a rekey's handover", "spi", fmt.Sprintf("0x%08x", ent.sa.SPI), "err", err)
		}
	}
	clear(e.mu.holds[len(kept):])
	e.mu.holds = kept
	if len(kept) == 0 {
		e.mu.holding = false
	}
	return len(kept)
}

// releaseLocked says why a held SA takes over now ("" to hold on).
func (e *Engine) releaseLocked(ent *saEntry, now time.Time) string {
	old := ent.replaces
	switch {
	case e.mu.sas[ent.sa.SAID] != ent:
		return "deleted"
	case e.mu.sas[old.sa.SAID] != old:
		return "the older SA is gone"
	case old.blocked:
		return "the older SA is blocked"
	case !now.Before(ent.holdUntil):
		return "no traffic from the peer on the new SA within " + handoverMax.String()
	}
	for _, s := range e.mu.reqSAs[ent.sa.Reqid] {
		if !s.sa.Inbound || s.seq < old.seq {
			continue
		}
		if c, ok := e.dp.SAStats(s.sa.SAID); ok && c.Packets > 0 {
			return "the peer sends on the new CHILD_SA"
		}
	}
	return ""
}
