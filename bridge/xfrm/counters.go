package xfrm

import (
	"time"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/engine"
)

// Counters back to the kernel. The kernel's copy of a mirrored SA carries
// nothing, so `ip xfrm state -s`, libreswan's `ipsec trafficstatus` and
// the daemons' own byte and packet lifetimes would see nothing: every
// interval the fast path's bytes, packets and sequence numbers are written
// into it with XFRM_MSG_NEWAE. The kernel checks byte and packet limits
// only as it processes packets, never on NEWAE, so those expiries come from
// the engine's lifetime check (the SA's byte and packet limits are in the
// model) and reach the daemon through the kernel with XFRM_MSG_EXPIRE
// (Notify). Time lifetimes stay the kernel's own timers.

// counters returns what NEWAE should write for r, from the fast path.
func (m *Mirror) counters(r *saRec, now time.Time) (aeCounters, bool) {
	c, ok := m.stats(r.id)
	if !ok {
		return aeCounters{}, false
	}
	ae := aeCounters{bytes: c.Bytes, packets: c.Packets, addTime: r.addTime, useTime: r.useTime}
	if ae.useTime == 0 && c.Packets > 0 {
		// the kernel's use_time is the first use
		if !c.LastUse.IsZero() {
			ae.useTime = uint64(c.LastUse.Unix())
		} else {
			ae.useTime = uint64(now.Unix())
		}
	}
	if r.inbound {
		ae.seq = c.SeqSeen
	} else if c.SeqUsed > 0 {
		ae.oseq = c.SeqUsed - 1 // the last number sent
	}
	return ae, true
}

// writeCounters writes the counters of every SA whose counters changed.
func (m *Mirror) writeCounters(conn Conn) {
	now := time.Now()
	m.mu.Lock()
	recs := make([]*saRec, 0, len(m.mu.sas))
	for _, r := range m.mu.sas {
		recs = append(recs, r)
	}
	m.mu.Unlock()
	for _, r := range recs {
		ae, ok := m.counters(r, now)
		m.mu.Lock()
		same := ok && ae == r.last
		m.mu.Unlock()
		if !ok || same {
			continue
		}
		if err := conn.Do(nl.XFRM_MSG_NEWAE, nlmFReplace, newAE(r, ae)); err != nil {
			m.log.Debug("xfrm mirror: writing counters back failed", "spi", spiStr(r.id.SPI), "err", err)
			continue
		}
		m.mu.Lock()
		r.last, r.useTime = ae, ae.useTime
		m.mu.Unlock()
	}
}

// NLM_F_REPLACE, which XFRM_MSG_NEWAE requires.
const nlmFReplace = 0x100

// Notify takes the engine's events (Engine.WatchLifetimes) to the kernel:
// an expiry becomes XFRM_MSG_EXPIRE on the kernel's SA, which the kernel
// passes on to the IKE daemon (and, when hard, deletes the SA: the mirror
// then deletes it from the engine). The counters go first, so that the
// daemon sees what reached the limit. Acquires and mappings have no
// request in XFRM: the daemon learns those only from the kernel's own
// packet processing, so they are logged.
func (m *Mirror) Notify(ev engine.Event) {
	switch ev.Kind {
	case engine.EventExpire:
		m.mu.Lock()
		r, ok := m.mu.sas[ev.SA]
		conn := m.mu.conn
		m.mu.Unlock()
		if !ok || conn == nil {
			return
		}
		if ae, ok := m.counters(r, time.Now()); ok {
			if err := conn.Do(nl.XFRM_MSG_NEWAE, nlmFReplace, newAE(r, ae)); err == nil {
				m.mu.Lock()
				r.last, r.useTime = ae, ae.useTime
				m.mu.Unlock()
			}
		}
		if err := conn.Do(nl.XFRM_MSG_EXPIRE, 0, expireMsg(r, ev.Hard)); err != nil {
			m.log.Warn("xfrm mirror: expiring the kernel's SA failed", "spi", spiStr(ev.SA.SPI), "hard", ev.Hard, "err", err)
			return
		}
		m.log.Info("xfrm mirror: SA expired in the kernel for the IKE daemon", "spi", spiStr(ev.SA.SPI), "hard", ev.Hard)
	case engine.EventAcquire:
		m.log.Debug("xfrm mirror: traffic for a policy without SA (the IKE daemon's own trap policies negotiate)", "reqid", ev.Reqid)
	case engine.EventMapping:
		m.log.Warn("xfrm mirror: ESP-in-UDP from a new address; XFRM has no way to tell the IKE daemon", "spi", spiStr(ev.SA.SPI), "src", ev.Src, "port", ev.NewPort)
	}
}
