package engine

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// reached says whether counters or age reached lifetime l (zero fields
// are no limit).
func reached(l model.Lifetime, bytes, packets uint64, age time.Duration) bool {
	return (l.Bytes != 0 && bytes >= l.Bytes) ||
		(l.Packets != 0 && packets >= l.Packets) ||
		(l.Time != 0 && age >= l.Time)
}

// counted says whether l limits bytes or packets (which only the fast
// path's counters tell).
func counted(l model.Lifetime) bool { return l.Bytes != 0 || l.Packets != 0 }

// checkLifetimes returns the expire events due at now, each SA's soft and
// hard expiry once, as the kernel raises them (XFRM_MSG_EXPIRE): soft makes
// charon rekey, hard makes it delete the SA. An SA past its hard lifetime
// stops carrying traffic at once (the fast path also enforces the byte and
// packet limits itself, per burst) and is deleted, as the kernel deletes
// it (hard.go).
//
// It runs every 100 ms over every SA, under the lock that installs wait
// for: the fast path's counters are read only for an SA with a byte or
// packet limit still to watch, or whose time is up (for the log line).
// charon's SAs usually have time limits alone, so a gateway with thousands
// of SAs pays a comparison per SA here, not a counter read.
func (e *Engine) checkLifetimes(now time.Time) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pruneLocked(now)
	e.reconcileLocked(now)
	evs := e.seqEventsLocked()
	for id, s := range e.mu.sas {
		if s.hardSent {
			continue
		}
		age := now.Sub(s.added)
		hardDue := s.sa.Hard.Time != 0 && age >= s.sa.Hard.Time
		softDue := !s.softSent && s.sa.Soft.Time != 0 && age >= s.sa.Soft.Time
		if !hardDue && !softDue && !counted(s.sa.Hard) && (s.softSent || !counted(s.sa.Soft)) {
			continue
		}
		c, ok := e.dp.SAStats(id)
		if !ok {
			continue
		}
		if reached(s.sa.Hard, c.Bytes, c.Packets, age) {
			s.hardSent, s.softSent = true, true
			if err := e.dp.ExpireSA(id); err != nil {
				e.log.Warn("expire SA", "spi", fmt.Sprintf("0x%08x", id.SPI), "err", err)
			}
			evs = append(evs, Event{Kind: EventExpire, SA: id, Hard: true})
			e.log.Info("SA reached its hard lifetime", "spi", fmt.Sprintf("0x%08x", id.SPI),
				"bytes", c.Bytes, "packets", c.Packets, "age", age.Round(time.Second))
			e.hardDeleteLocked(s, now)
			continue
		}
		if !s.softSent && reached(s.sa.Soft, c.Bytes, c.Packets, age) {
			s.softSent = true
			evs = append(evs, Event{Kind: EventExpire, SA: id})
			e.log.Info("SA reached its soft lifetime", "spi", fmt.Sprintf("0x%08x", id.SPI),
				"bytes", c.Bytes, "packets", c.Packets, "age", age.Round(time.Second))
		}
	}
	return evs
}

// WatchLifetimes checks the lifetimes every interval and hands the expire
// events to notify (the plugin socket's Notify) until ctx is done.
func (e *Engine) WatchLifetimes(ctx context.Context, interval time.Duration, notify func(Event)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			for _, ev := range e.checkLifetimes(now) {
				notify(ev)
			}
		}
	}
}

// acquireHold is how long a reqid's acquire is not repeated: charon is
// negotiating (the kernel keeps its larval state for xfrm_acq_expires).
const acquireHold = 3 * time.Second

// Acquire turns a packet that hit an IPsec policy without SA into an
// acquire event for charon, once per reqid while charon negotiates.
func (e *Engine) Acquire(now time.Time, reqid uint32, src, dst netip.Addr) (Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if last, ok := e.mu.acquired[reqid]; ok && now.Sub(last) < acquireHold {
		return Event{}, false
	}
	e.mu.acquired[reqid] = now
	e.log.Info("acquire: traffic for a policy without SA", "reqid", reqid, "src", src, "dst", dst)
	return Event{Kind: EventAcquire, Reqid: reqid, Src: src, Dst: dst}, true
}

// Mapping turns authenticated ESP-in-UDP that arrived on an inbound SA from
// a new address or port into a mapping event for charon (as the kernel's
// XFRM_MSG_MAPPING), once per new mapping while charon updates the SA.
func (e *Engine) Mapping(now time.Time, spi uint32, src netip.Addr, port uint16) (Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, s := range e.mu.sas {
		if !s.sa.Inbound || id.SPI != spi {
			continue
		}
		key := mappingKey{spi: spi, src: src, port: port}
		if last, ok := e.mu.mapped[key]; ok && now.Sub(last) < acquireHold {
			return Event{}, false
		}
		e.mu.mapped[key] = now
		e.log.Info("mapping: ESP-in-UDP from a new address", "spi", fmt.Sprintf("0x%08x", spi),
			"was", fmt.Sprintf("%s:%d", s.sa.Src, s.sa.SrcPort), "now", fmt.Sprintf("%s:%d", src, port))
		return Event{Kind: EventMapping, SA: id, Src: src, NewPort: port}, true
	}
	return Event{}, false
}

// pruneLocked forgets acquires and mappings older than acquireHold: they
// are keyed by what packets carry (reqids of trap policies, addresses and
// ports of NAT-T peers), so they must not grow for ever. A mapping also goes
// with its SA (DelSA).
func (e *Engine) pruneLocked(now time.Time) {
	for r, t := range e.mu.acquired {
		if now.Sub(t) >= acquireHold {
			delete(e.mu.acquired, r)
		}
	}
	for k, t := range e.mu.mapped {
		if now.Sub(t) >= acquireHold {
			delete(e.mu.mapped, k)
		}
	}
	for id, g := range e.mu.gone {
		if now.Sub(g.at) >= goneHold {
			e.forgetGoneLocked(id)
		}
	}
}

type mappingKey struct {
	spi  uint32
	src  netip.Addr
	port uint16
}
