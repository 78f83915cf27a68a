package fastpath

// The policy set: bindings of policies to SAs, changed in place where the
// published tables allow, and the policy tables (rte_acl) built from it.
// When they are rebuilt is rebuild.go's state machine; building and
// publishing them is policyTables, its tableOps.

// #include "dp_atomic.h"
import "C"

import (
	"cmp"
	"fmt"
	"slices"
	"sync/atomic"
	"unsafe"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// polState is a policy as the fast path keeps it: the binding, and where
// its SA pointer sits in the published tables (nil until published).
type polState struct {
	b    dataplane.Binding
	slot **C.struct_sp_sa
	ifc  int // 0: policy-based; else 1 + the index of its route-based interface
}

func (f *Fastpath) checkPolicy(p *model.Policy) error {
	if p.Sel.Src.Addr().Is4() != p.Sel.Dst.Addr().Is4() {
		return fmt.Errorf("policy %s: %w (source and destination of different families)", p.Sel, model.ErrInvalid)
	}
	if err := p.ValidateRouted(); err != nil {
		return fmt.Errorf("policy %s: %w", p.Sel, err)
	}
	if _, err := ifcOf(f.ifcs, p.Mark, p.MarkMask, p.IfID); err != nil {
		return fmt.Errorf("policy %s %s: %w", p.Sel, p.Dir, err)
	}
	return nil
}

// SetPolicies replaces every policy and publishes the tables at once.
func (f *Fastpath) SetPolicies(b []dataplane.Binding) error {
	for _, x := range b {
		if err := f.checkPolicy(x.Policy); err != nil {
			return fmt.Errorf("set policies: %w", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, st := range f.mu.pols {
		f.orphanLocked(st)
	}
	was := f.mu.reqIfc
	f.mu.pols = make(map[model.PolicyID]*polState, len(b))
	f.mu.bySA = make(map[model.SAID]map[model.PolicyID]struct{})
	f.mu.reqIfc = nil
	for _, x := range b {
		f.putLocked(x)
	}
	for reqid := range was { // interfaces no policy names any more
		if f.mu.reqIfc[reqid] == nil {
			f.followLocked(reqid, 0)
		}
	}
	f.mu.rb.noteLocked(true)
	return f.mu.rb.publishLocked()
}

// putLocked stores a binding (the policy copied).
func (f *Fastpath) putLocked(b dataplane.Binding) {
	p := *b.Policy
	b.Policy = &p
	old := f.mu.pols[p.PolicyID]
	if old != nil {
		f.unbindLocked(p.PolicyID, old)
		f.orphanLocked(old)
		f.routedLocked(old, -1)
	}
	f.mu.rb.noteLocked(old != nil)                      // the old one is out of the tables being built
	ifc, _ := ifcOf(f.ifcs, p.Mark, p.MarkMask, p.IfID) // checked by checkPolicy
	st := &polState{b: b, ifc: ifc}
	f.mu.pols[p.PolicyID] = st
	f.bindLocked(p.PolicyID, b)
	f.routedLocked(st, 1)
}

// orphanLocked keeps a policy taken out of the policy set while the
// published tables still hold it (until the next install): its SA must not
// be freed under it (see repointLocked).
func (f *Fastpath) orphanLocked(st *polState) {
	if st.slot == nil || !st.b.HasSA {
		return
	}
	if f.mu.orphans == nil {
		f.mu.orphans = make(map[model.SAID][]*polState)
	}
	f.mu.orphans[st.b.SA] = append(f.mu.orphans[st.b.SA], st)
}

func (f *Fastpath) bindLocked(id model.PolicyID, b dataplane.Binding) {
	if !b.HasSA {
		return
	}
	m := f.mu.bySA[b.SA]
	if m == nil {
		m = make(map[model.PolicyID]struct{})
		f.mu.bySA[b.SA] = m
	}
	m[id] = struct{}{}
}

func (f *Fastpath) unbindLocked(id model.PolicyID, st *polState) {
	if !st.b.HasSA {
		return
	}
	if m := f.mu.bySA[st.b.SA]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(f.mu.bySA, st.b.SA)
		}
	}
}

// SetPolicy adds or replaces one policy. The tables are rebuilt aside and
// swapped: at once up to a hundred policies, else at most once per short
// interval together with the changes that follow (a burst of installs
// into thousands of policies costs one rebuild per interval, not one per
// policy).
func (f *Fastpath) SetPolicy(b dataplane.Binding) error {
	if err := f.checkPolicy(b.Policy); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.mu.pols[b.Policy.PolicyID]; old != nil && sameRule(old.b.Policy, b.Policy) {
		// the same policy again (another CHILD_SA using it, or a
		// rekey's move to the new SPI): a binding change at most, in
		// place, with no rebuild of the tables in between
		return f.bindInPlaceLocked(b.Policy.PolicyID, b.SA, b.HasSA)
	}
	f.putLocked(b)
	return f.mu.rb.changedLocked()
}

// sameRule says whether two policies build the same tables: all but the
// SPI their template names, which only the engine's choice of SA reads.
func sameRule(a, b *model.Policy) bool {
	x, y := *a, *b
	x.SPI, y.SPI = 0, 0
	return x == y
}

// DelPolicy removes a policy (with the next rebuild of the tables).
func (f *Fastpath) DelPolicy(id model.PolicyID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.mu.pols[id]
	if st == nil {
		return fmt.Errorf("delete policy %s %s: %w", id.Sel, id.Dir, model.ErrNotFound)
	}
	f.unbindLocked(id, st)
	f.orphanLocked(st)
	delete(f.mu.pols, id)
	f.routedLocked(st, -1)
	f.mu.rb.noteLocked(true)
	return f.mu.rb.changedLocked()
}

// Bind points an outbound policy at another SA, in place.
func (f *Fastpath) Bind(id model.PolicyID, sa model.SAID, has bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bindInPlaceLocked(id, sa, has)
}

func (f *Fastpath) bindInPlaceLocked(id model.PolicyID, sa model.SAID, has bool) error {
	st := f.mu.pols[id]
	if st == nil {
		return fmt.Errorf("bind policy %s %s: %w", id.Sel, id.Dir, model.ErrNotFound)
	}
	f.unbindLocked(id, st)
	st.b.SA, st.b.HasSA = sa, has
	f.bindLocked(id, st.b)
	if st.slot != nil {
		C.sp_slot_set(st.slot, f.saPtrLocked(st.b))
	}
	return nil
}

// saPtrLocked is what a policy's slot holds: its SA, and never one for a
// pass or drop policy (the loop takes an SA in a slot for "protect").
func (f *Fastpath) saPtrLocked(b dataplane.Binding) *C.struct_sp_sa {
	if b.HasSA && b.Policy.Action == model.ActionIPsec {
		if e, ok := f.mu.sas[b.SA]; ok {
			return e.c
		}
	}
	return nil
}

// policyFields sets what IPv4 and IPv6 policies have in common.
func policyFields(p *model.Policy) (sportLo, sportHi, dportLo, dportHi C.uint16_t, proto, action C.uint8_t, reqid C.uint32_t) {
	s := p.Sel
	sportLo, sportHi = C.uint16_t(s.SrcPortLo), C.uint16_t(s.SrcPortHi)
	dportLo, dportHi = C.uint16_t(s.DstPortLo), C.uint16_t(s.DstPortHi)
	if s.SrcPortHi == 0 {
		sportHi = 0xffff
	}
	if s.DstPortHi == 0 {
		dportHi = 0xffff
	}
	return sportLo, sportHi, dportLo, dportHi, C.uint8_t(s.Proto), policyAction(p.Action), C.uint32_t(p.Reqid)
}

func fillPolicy(dst *C.struct_sp_policy, p *model.Policy) {
	s := p.Sel
	dst.src = beFromAddr(s.Src.Masked().Addr())
	dst.src_mask = maskBE(s.Src)
	dst.dst = beFromAddr(s.Dst.Masked().Addr())
	dst.dst_mask = maskBE(s.Dst)
	dst.sport_lo, dst.sport_hi, dst.dport_lo, dst.dport_hi, dst.proto, dst.action, dst.reqid = policyFields(p)
}

func fillPolicy6(dst *C.struct_sp_policy6, p *model.Policy) {
	dst.src, dst.src_mask = maskC(p.Sel.Src)
	dst.dst, dst.dst_mask = maskC(p.Sel.Dst)
	dst.sport_lo, dst.sport_hi, dst.dport_lo, dst.dport_hi, dst.proto, dst.action, dst.reqid = policyFields(p)
}

// policyOrder is the order of the policy tables: priority (lower value
// first, as XFRM), then the more specific selector, then a fixed order.
func policyOrder(a, b *polState) int {
	pa, pb := a.b.Policy, b.b.Policy
	if c := cmp.Compare(pa.Priority, pb.Priority); c != 0 {
		return c
	}
	sa, sb := pa.Sel.Src.Bits()+pa.Sel.Dst.Bits(), pb.Sel.Src.Bits()+pb.Sel.Dst.Bits()
	if c := cmp.Compare(sb, sa); c != 0 {
		return c
	}
	if c := pa.Sel.Src.Addr().Compare(pb.Sel.Src.Addr()); c != 0 {
		return c
	}
	if c := pa.Sel.Dst.Addr().Compare(pb.Sel.Dst.Addr()); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(pa.Sel.Proto, pb.Sel.Proto), cmp.Compare(pa.Sel.SrcPortLo, pb.Sel.SrcPortLo),
		cmp.Compare(pa.Sel.DstPortLo, pb.Sel.DstPortLo), cmp.Compare(pa.Dir, pb.Dir))
}

// polSnap is the policy set a rebuild of the tables starts from: the
// policies by table, in table order.
type polSnap struct {
	out, in, out6, in6 []*polState
	// the policies of each route-based interface, in tables of their own
	// (nil: none); always nil in such a table itself
	ifc []*polSnap
}

// policyTables builds and publishes the policy tables for the rebuilder
// (rebuild.go).
type policyTables struct{ f *Fastpath }

var _ tableOps[*polSnap, *C.struct_sp_ipsec_tables] = policyTables{}

func (p policyTables) sizeLocked() int { return len(p.f.mu.pols) }

func (p policyTables) build(s *polSnap) (*C.struct_sp_ipsec_tables, error) { return buildTables(s) }

func (p policyTables) discard(t *C.struct_sp_ipsec_tables) { C.sp_ipsec_tables_free(t) }

// snapshotLocked takes the policy set for a rebuild. Only the lists are
// taken here: a polState's policy never changes (a changed policy is a new
// polState), so the tables can be built from them outside the lock.
func (p policyTables) snapshotLocked() *polSnap {
	f := p.f
	s := &polSnap{ifc: make([]*polSnap, len(f.ifcs))}
	for _, st := range f.mu.pols {
		v6 := st.b.Policy.Sel.Src.Addr().Is6()
		s := s
		if st.ifc != 0 {
			if s.ifc[st.ifc-1] == nil {
				s.ifc[st.ifc-1] = &polSnap{}
			}
			s = s.ifc[st.ifc-1]
		}
		switch {
		case st.b.Policy.Dir == model.DirOut && v6:
			s.out6 = append(s.out6, st)
		case st.b.Policy.Dir == model.DirOut:
			s.out = append(s.out, st)
		case v6:
			s.in6 = append(s.in6, st)
		default:
			s.in = append(s.in, st)
		}
	}
	return s
}

// buildTables builds the policy tables of s, with their rte_acl contexts
// and no SA pointers yet (installLocked sets them). It needs no lock.
func buildTables(s *polSnap) (*C.struct_sp_ipsec_tables, error) {
	for _, l := range [][]*polState{s.out, s.in, s.out6, s.in6} {
		slices.SortFunc(l, policyOrder)
	}
	t := C.sp_ipsec_tables_new(C.uint32_t(len(s.out)), C.uint32_t(len(s.in)),
		C.uint32_t(len(s.out6)), C.uint32_t(len(s.in6)))
	if t == nil {
		return nil, fmt.Errorf("build IPsec tables: out of memory")
	}
	fillAll(t.out, s.out, fillPolicy)
	fillAll(t.in, s.in, fillPolicy)
	fillAll(t.out6, s.out6, fillPolicy6)
	fillAll(t.in6, s.in6, fillPolicy6)
	if h := buildHook.Load(); h != nil {
		(*h)()
	}
	var ebuf [256]C.char
	if C.sp_ipsec_tables_build_acl(t, &ebuf[0], C.size_t(len(ebuf))) != 0 {
		C.sp_ipsec_tables_free(t)
		return nil, fmt.Errorf("build policy tables: %s", cerr(ebuf[:]))
	}
	for i, is := range s.ifc {
		if is == nil {
			continue
		}
		it, err := buildTables(is)
		if err != nil {
			C.sp_ipsec_tables_free(t)
			return nil, fmt.Errorf("route-based interface %d: %w", i, err)
		}
		t.ifc[i] = it // freed with t
	}
	return t, nil
}

// fillAll fills the table at dst (room for l and a terminator) with l's
// policies.
func fillAll[P any](dst *P, l []*polState, fill func(*P, *model.Policy)) {
	rows := unsafe.Slice(dst, len(l)+1)
	for i, st := range l {
		fill(&rows[i], st.b.Policy)
	}
}

// buildHook, when set (tests), runs in every rebuild between taking the
// policies and building the rte_acl contexts.
var buildHook atomic.Pointer[func()]

// installLocked points the outbound policies of t at their SAs as bound
// now, publishes t and frees the previous tables after a grace period.
// No policy of s may have been removed since s was taken.
func (p policyTables) installLocked(t *C.struct_sp_ipsec_tables, s *polSnap) {
	f := p.f
	for _, st := range f.mu.pols {
		st.slot = nil // a policy added since s is in no table yet
	}
	// from now on Bind changes the SA pointers of the published tables
	f.slotsLocked(t, s)
	for i, is := range s.ifc {
		if is != nil {
			f.slotsLocked(t.ifc[i], is)
		}
	}
	old := f.mu.ipsec
	C.sp_publish_ipsec(f.dp, t)
	f.mu.ipsec = t
	f.mu.orphans = nil // their slots were in the tables just freed
	C.sp_synchronize(f.dp)
	C.sp_ipsec_tables_free(old)
}

// slotsLocked points the outbound policies of table t (built from s) at
// their SAs and remembers where each one's pointer is.
func (f *Fastpath) slotsLocked(t *C.struct_sp_ipsec_tables, s *polSnap) {
	outs := unsafe.Slice(t.out_sa, len(s.out)+1)
	outs6 := unsafe.Slice(t.out6_sa, len(s.out6)+1)
	for i, st := range s.out {
		outs[i] = f.saPtrLocked(st.b)
		st.slot = &outs[i]
	}
	for i, st := range s.out6 {
		outs6[i] = f.saPtrLocked(st.b)
		st.slot = &outs6[i]
	}
}
