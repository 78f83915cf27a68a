package engine

import (
	"fmt"

	"github.com/swanpath/swanpath/bridge/model"
)

// Sequence numbers across restarts and failing checkpoints (issue 18,
// "fail closed"): an outbound SA never sends a sequence number twice (with
// AES-GCM it is the IV), and an inbound SA never accepts again what it
// received before a restart. When that cannot be guaranteed, an outbound
// SA is blocked (the fast path drops its packets as drop_seq; it stays
// installed, so that the rekey is make-before-break) and charon gets a
// soft expire for it, so that it rekeys: new keys, sequence numbers from 1.
// A hard expire would make charon delete the CHILD_SA instead.

// KeepSequences makes the SAs that come back after a restart continue
// their sequence numbers from st (see SeqState and resumeLocked).
func (e *Engine) KeepSequences(st *SeqState) { e.seq = st }

// resumeLocked sets where sa's sequence numbers start: an outbound SA
// that ran before continues above every number it sent, an inbound one
// refuses every number it received. block says an outbound SA has no safe
// start (replayed without a record, or its record is one a crash would
// reuse); rekey that an inbound SA may accept packets again (replayed
// without a record, or after a crash: packets received after the last
// checkpoint). An SA added outside a replay is new: new keys, its numbers
// start at 1 and its window is empty, as they should.
func (e *Engine) resumeLocked(sa *model.SA) (block, rekey bool) {
	spi := fmt.Sprintf("0x%08x", sa.SPI)
	if sa.Inbound {
		if e.seq != nil {
			if h, ok := e.seq.ResumeIn(sa.SAID); ok {
				sa.SeqStart = max(sa.SeqStart, h)
				e.log.Info("SA's replay window starts above the last number received", "spi", spi, "seq", h)
				if e.seq.Crashed() {
					e.log.Warn("SA replayed after a crash: packets received since the last checkpoint could be replayed, asking charon to rekey it", "spi", spi)
					return false, true
				}
				return false, false
			}
		}
		if e.replayingLocked() {
			e.log.Warn("SA replayed without a record of the numbers it received: asking charon to rekey it", "spi", spi)
			return false, true
		}
		return false, false
	}
	if e.seq != nil {
		if v, ok := e.seq.Resume(sa.SAID); ok {
			// a source that knows where the SA stands (the kernel's
			// copy, for the XFRM mirror) may know better
			v = max(sa.SeqStart, v)
			sa.SeqStart = v
			e.log.Info("SA resumes its sequence numbers", "spi", spi, "seq", v)
			if b, ok := e.seq.CrashResume(sa.SAID); ok && !belowGuard(v, b) {
				// the state file could not be marked as running: a
				// crash would resume at v again
				e.log.Warn("SA blocked: its sequence numbers are not safe after a crash (state file not written), asking charon to rekey it", "spi", spi)
				return true, false
			}
			return false, false
		}
	}
	if e.replayingLocked() {
		e.log.Warn("SA blocked: replayed without a record of its sequence numbers (state file missing or damaged), asking charon to rekey it", "spi", spi)
		return true, false
	}
	return false, false
}

// belowGuard says whether an outbound SA at sequence number used is far
// enough (half the margin) below crash, where it would resume after a
// crash: it may go on sending while the checkpoints fail.
func belowGuard(used, crash uint64) bool {
	return crash > CrashMargin/2 && used < crash-CrashMargin/2
}

// Seqs returns the sequence numbers of the installed SAs, for SeqState.Save:
// per outbound SA an upper bound of the numbers it has used, per inbound SA
// the highest number it received.
func (e *Engine) Seqs() Seqs {
	e.mu.Lock()
	ents := make([]saEntry, 0, len(e.mu.sas))
	for _, s := range e.mu.sas {
		ents = append(ents, *s)
	}
	e.mu.Unlock()
	out := Seqs{Out: make(map[model.SAID]uint64), In: make(map[model.SAID]uint64)}
	for _, s := range ents {
		c, ok := e.dp.SAStats(s.sa.SAID)
		switch {
		case !ok:
		case s.sa.Inbound:
			out.In[s.sa.SAID] = c.SeqSeen
		default:
			out.Out[s.sa.SAID] = c.SeqUsed
		}
	}
	return out
}

// Checkpoint saves the sequence numbers (clean: the fast path has stopped).
// When it fails, the outbound SAs that come near where a crash would
// resume them are blocked (and rekeyed); while it keeps failing,
// checkLifetimes watches them every time it runs.
func (e *Engine) Checkpoint(clean bool) error {
	if e.seq == nil {
		return nil
	}
	seqs := e.Seqs()
	err := e.seq.Save(seqs, clean)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mu.ckptFailing = err != nil
	if err != nil {
		e.guardLocked(seqs.Out)
	}
	return err
}

// guardLocked blocks each outbound SA whose number in used is no longer
// below its guard (see belowGuard) and queues a soft expire for it.
func (e *Engine) guardLocked(used map[model.SAID]uint64) {
	for id, v := range used {
		s, ok := e.mu.sas[id]
		if !ok || s.blocked {
			continue
		}
		crash, ok := e.seq.CrashResume(id)
		if !ok || belowGuard(v, crash) {
			continue // no record: after a crash it comes back blocked
		}
		if err := e.dp.BlockSA(id); err != nil {
			e.log.Warn("block SA", "spi", fmt.Sprintf("0x%08x", id.SPI), "err", err)
			continue
		}
		s.blocked = true
		e.log.Warn("SA blocked: checkpoints of the sequence numbers fail and it nears where a crash would resume it, asking charon to rekey it",
			"spi", fmt.Sprintf("0x%08x", id.SPI), "seq", v, "crash_resume", crash)
		if !s.hardSent {
			s.softSent = true
			e.mu.pending = append(e.mu.pending, id)
		}
	}
}

// seqEventsLocked runs with every lifetime check: while the checkpoints
// fail it reads the outbound SAs that have a record on disk and blocks
// those near their guard; once the replay is done it returns the soft
// expires queued for SAs still installed.
func (e *Engine) seqEventsLocked() []Event {
	if e.mu.ckptFailing && e.seq != nil {
		used := make(map[model.SAID]uint64)
		for id, s := range e.mu.sas {
			if s.sa.Inbound || s.blocked {
				continue
			}
			if _, ok := e.seq.CrashResume(id); !ok {
				continue
			}
			if c, ok := e.dp.SAStats(id); ok {
				used[id] = c.SeqUsed
			}
		}
		e.guardLocked(used)
	}
	if e.replayingLocked() || len(e.mu.pending) == 0 {
		return nil
	}
	var evs []Event
	for _, id := range e.mu.pending {
		if s, ok := e.mu.sas[id]; ok && !s.hardSent {
			evs = append(evs, Event{Kind: EventExpire, SA: id})
		}
	}
	e.mu.pending = nil
	return evs
}
