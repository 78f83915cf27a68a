package fastpath

// SA counters, summed over the workers.

// #include "dp_atomic.h"
import "C"

import (
	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// SAStats reads an SA's counters.
func (f *Fastpath) SAStats(id model.SAID) (dataplane.SACounters, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.mu.sas[id]
	if !ok {
		return dataplane.SACounters{}, false
	}
	st := f.sum(e.c)
	c := dataplane.SACounters{
		SeqUsed:       nextSeq(e.sa.SeqStart, st.packets),
		Bytes:         st.bytes,
		Packets:       st.packets,
		LastUse:       f.tscToTime(st.lastUse),
		DropAuth:      st.dropAuth,
		DropReplay:    st.dropReplay,
		DropMalformed: st.dropMalformed,
		DropPolicy:    st.dropPolicy,
		Crypto:        e.crypto,
		CryptoMode:    cryptoMode(e.c),
		Blocked:       C.sp_sa_dead(e.c)&C.SP_SA_BLOCKED != 0,
	}
	if mtu := uint16(C.sp_sa_mtu(e.c)); !e.sa.Inbound && mtu != C.SP_MTU_NONE {
		c.PathMTU = mtu
	}
	if e.sa.Inbound {
		c.SeqUsed, c.SeqSeen = 0, st.seqSeen
	}
	if !ownsIfc(&e.sa) {
		c.Interface = f.followedLocked(id, e)
	}
	return c, true
}

func cryptoMode(c *C.struct_sp_sa) string {
	if c.cpu != 0 {
		return "cpu"
	}
	return "lookaside"
}

// saSum is an SA's counters over all workers.
type saSum struct {
	packets, bytes, lastUse                         uint64
	dropAuth, dropReplay, dropMalformed, dropPolicy uint64
	seqSeen                                         uint64 // inbound
}

func (f *Fastpath) sum(c *C.struct_sp_sa) saSum {
	// one worker counts in c.ctr, more in their st[w].c (see dp.h)
	s := saSum{packets: uint64(c.ctr.packets), bytes: uint64(c.ctr.bytes), lastUse: uint64(c.ctr.last_use),
		seqSeen: uint64(c.ctr.seq_max)}
	for w := range f.workers {
		st := &c.st[w]
		s.packets += uint64(st.c.packets)
		s.bytes += uint64(st.c.bytes)
		s.lastUse = max(s.lastUse, uint64(st.c.last_use))
		s.dropAuth += uint64(st.drop_auth)
		s.dropReplay += uint64(st.drop_replay)
		s.dropMalformed += uint64(st.drop_malformed)
		s.dropPolicy += uint64(st.drop_policy)
		s.seqSeen = max(s.seqSeen, uint64(st.c.seq_max))
	}
	return s
}
