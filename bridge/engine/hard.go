package engine

import (
	"fmt"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// Hard lifetimes as the kernel has them. At an SA's hard lifetime Linux
// raises XFRM_MSG_EXPIRE with hard set and deletes the state itself
// (xfrm_timer_handler: km_state_expired, then __xfrm_state_delete),
// whatever the IKE daemon does next. swanpathd does the same: the expire
// goes to charon and the SA leaves the fast path at once, its keys wiped
// and its crypto session released, so that no SA outlives its lifetime
// when charon is gone, hung or another process. Policies stay as charon
// installed them, as on the kernel: an outbound one bound to the SA falls
// back to the next SA of its reqid, or to none (its traffic then raises an
// acquire).
//
// charon answers a hard expire by deleting the CHILD_SA, so a DEL_SA for
// the SA follows; it is answered NOT_FOUND, as the kernel answers one for a
// state it removed (ESRCH), which kernel-netlink's del_sa returns without
// logging an error.

// goneHold is how long a hard-deleted SA is remembered: charon's delete
// usually follows within milliseconds, a stopped charon's when it resumes.
// Its SPI (inbound) is not handed out again meanwhile, so that a late
// delete cannot hit a new SA reusing it.
const goneHold = 10 * time.Minute

// hardDeleteLocked deletes an SA that reached its hard lifetime.
func (e *Engine) hardDeleteLocked(s *saEntry, now time.Time) {
	id := s.sa.SAID
	if err := e.deleteLocked(s); err != nil {
		// it stays expired (no traffic) until charon deletes it
		e.log.Warn("delete SA at its hard lifetime", "spi", fmt.Sprintf("0x%08x", id.SPI), "err", err)
		return
	}
	e.mu.gone[id] = goneSA{at: now, inbound: s.sa.Inbound}
	if s.sa.Inbound {
		e.mu.spis[id.SPI] = true // reserved until forgotten
	}
	e.log.Info("SA deleted at its hard lifetime", "spi", fmt.Sprintf("0x%08x", id.SPI),
		"dir", s.sa.Direction(), "reqid", s.sa.Reqid)
}

// goneLocked reports whether id was deleted at its hard lifetime and
// forgets it: charon deletes an SA once.
func (e *Engine) goneLocked(id model.SAID) bool {
	if _, ok := e.mu.gone[id]; !ok {
		return false
	}
	e.forgetGoneLocked(id)
	return true
}

func (e *Engine) forgetGoneLocked(id model.SAID) {
	g, ok := e.mu.gone[id]
	if !ok {
		return
	}
	delete(e.mu.gone, id)
	if _, live := e.mu.sas[id]; g.inbound && !live {
		delete(e.mu.spis, id.SPI)
	}
}

// goneSA is an SA deleted at its hard lifetime.
type goneSA struct {
	at      time.Time
	inbound bool
}
