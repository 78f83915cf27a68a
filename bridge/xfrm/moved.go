package xfrm

import (
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// SAs that an IKE daemon moves by deleting and adding them again.
// strongSwan's kernel-netlink has no XFRM_MSG_MIGRATE: to move an SA
// (MOBIKE, a changed NAT mapping) it reads the kernel's replay state,
// deletes the SA and adds it again at its new addresses with the same SPI,
// keys and replay state (kernel_netlink_ipsec.c, update_sa). The replay
// state it copies is what swanpathd last wrote back, up to an interval
// behind what the fast path sent: the added SA would send those sequence
// numbers again under the same key (for AES-GCM the same IVs). So the
// mirror remembers where each deleted outbound SA stood in the fast path,
// and an outbound SA added with the same SPI and reqid soon after starts
// above it.

const (
	// carryFor is how long a deleted outbound SA's sequence number is
	// kept for an SA added again (the daemon adds it right after the
	// deletion).
	carryFor = 30 * time.Second
	// carryMargin covers what the fast path may send between the
	// counters' read and the deletion: numbers skipped are harmless (the
	// peer's replay window moves on), numbers sent twice are not.
	carryMargin = 1 << 16
)

type carried struct {
	next  uint64 // the first sequence number not sent
	reqid uint32
	at    time.Time
}

// rememberSeq keeps where the outbound SA of rec stands before it is
// deleted.
func (m *Mirror) rememberSeq(rec *saRec) {
	if rec.inbound {
		return
	}
	c, ok := m.stats(rec.id)
	if !ok || c.SeqUsed == 0 {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.carry == nil {
		m.mu.carry = make(map[uint32]carried)
	}
	for spi, k := range m.mu.carry {
		if now.Sub(k.at) > carryFor {
			delete(m.mu.carry, spi)
		}
	}
	m.mu.carry[rec.id.SPI] = carried{next: c.SeqUsed + carryMargin, reqid: rec.reqid, at: now}
}

// carrySeq raises the start of an outbound SA added again (same SPI and
// reqid, soon after its deletion) above what the fast path sent on it.
func (m *Mirror) carrySeq(sa *model.SA) {
	if sa.Inbound {
		return
	}
	m.mu.Lock()
	k, ok := m.mu.carry[sa.SPI]
	if ok {
		delete(m.mu.carry, sa.SPI)
	}
	m.mu.Unlock()
	if !ok || k.reqid != sa.Reqid || time.Since(k.at) > carryFor {
		return
	}
	if !sa.ESN && k.next > 1<<32-1 {
		k.next = 1<<32 - 1 // the engine blocks and expires it: rekeyed, not wrapped
	}
	if sa.SeqStart < k.next {
		m.log.Info("xfrm mirror: SA added again after its deletion (moved by the daemon): its sequence numbers go on above what the fast path sent",
			"spi", spiStr(sa.SPI), "reqid", sa.Reqid, "seqstart", k.next)
		sa.SeqStart = k.next
	}
}
