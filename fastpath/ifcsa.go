package fastpath

// Inbound SAs without a mark of their own that belong to a route-based
// interface through their policies. libreswan's vti-interface= (and
// mark= without mark-in/out) marks the policies only: its SAs have mark
// 0/0, which on Linux matches any mark, and what they decrypt leaves by
// the VTI the policies' mark names. Here such an inbound SA takes the
// interface of the route-based inbound (in, fwd) policies of its reqid:
// its plaintext comes out of that interface, checked against its
// policies, as if the SA had the mark itself. An SA with a mark or an
// interface id keeps its own; when the reqid's route-based policies name
// no interface or more than one, the SA stays policy-based.

// #include "dp_atomic.h"
import "C"

import (
	"fmt"

	"github.com/swanpath/swanpath/bridge/model"
)

// routedLocked counts st into (delta 1) or out of (delta -1) the
// route-based inbound policies of its reqid, and moves that reqid's SAs
// when their interface changes.
func (f *Fastpath) routedLocked(st *polState, delta int) {
	p := st.b.Policy
	if st.ifc == 0 || p.Reqid == 0 || (p.Dir != model.DirIn && p.Dir != model.DirFwd) {
		return
	}
	if f.mu.reqIfc == nil {
		f.mu.reqIfc = make(map[uint32]map[int]int)
	}
	m := f.mu.reqIfc[p.Reqid]
	if m == nil {
		m = make(map[int]int)
		f.mu.reqIfc[p.Reqid] = m
	}
	before := f.reqIfcLocked(p.Reqid)
	if m[st.ifc] += delta; m[st.ifc] <= 0 {
		delete(m, st.ifc)
	}
	if len(m) == 0 {
		delete(f.mu.reqIfc, p.Reqid)
	}
	if after := f.reqIfcLocked(p.Reqid); after != before {
		f.followLocked(p.Reqid, after)
	}
}

// reqIfcLocked is the interface (1 + index, 0 for none) that the
// route-based inbound policies of reqid name, when they name one.
func (f *Fastpath) reqIfcLocked(reqid uint32) int {
	m := f.mu.reqIfc[reqid]
	if len(m) != 1 {
		return 0
	}
	for ifc := range m {
		return ifc
	}
	return 0
}

// ownsIfc says whether an SA names its interface itself (a mark or an
// interface id): then its policies do not move it.
func ownsIfc(sa *model.SA) bool { return sa.Mark != 0 || sa.MarkMask != 0 || sa.IfID != 0 }

// followLocked moves every inbound SA of reqid without an interface of
// its own to ifc.
func (f *Fastpath) followLocked(reqid uint32, ifc int) {
	for id, e := range f.mu.sas {
		if !e.sa.Inbound || e.sa.Reqid != reqid || ownsIfc(&e.sa) || e.params.ifc == ifc {
			continue
		}
		e.params.ifc = ifc // MoveSA builds from params
		C.sp_sa_set_ifc(e.c, C.uint8_t(ifc))
		name := f.followedLocked(id, e)
		if name == "" {
			name = "none (policy-based)"
		}
		f.log.Info("inbound SA follows its policies' route-based interface",
			"spi", fmt.Sprintf("0x%08x", id.SPI), "reqid", reqid, "interface", name)
	}
}

// followedLocked names the interface an SA without one of its own
// follows: an inbound SA's (followLocked), or the one of the route-based
// policies an outbound SA is bound to; "" for none.
func (f *Fastpath) followedLocked(id model.SAID, e *saEntry) string {
	ifc := e.params.ifc
	if !e.sa.Inbound {
		for pid := range f.mu.bySA[id] {
			if st := f.mu.pols[pid]; st != nil && st.ifc != 0 {
				ifc = st.ifc
				break
			}
		}
	}
	if ifc == 0 || ifc > len(f.ifcs) {
		return ""
	}
	return f.ifcs[ifc-1].Name
}
