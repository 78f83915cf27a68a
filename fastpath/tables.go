package fastpath

/*
#include <stdlib.h>
#include <string.h>
#include "dp.h"

static inline void sp_sa_kill(struct sp_sa *sa) { __atomic_fetch_or(&sa->dead, SP_SA_EXPIRED, __ATOMIC_RELAXED); }
static inline void sp_sa_block(struct sp_sa *sa) { __atomic_fetch_or(&sa->dead, SP_SA_BLOCKED, __ATOMIC_RELAXED); }
static inline uint8_t sp_sa_dead(struct sp_sa *sa) { return __atomic_load_n(&sa->dead, __ATOMIC_RELAXED); }
static inline void sp_sa_set_dead(struct sp_sa *sa, uint8_t v) { __atomic_store_n(&sa->dead, v, __ATOMIC_RELAXED); }
static inline void sp_slot_set(struct sp_sa **slot, struct sp_sa *sa) { __atomic_store_n(slot, sa, __ATOMIC_RELEASE); }
static inline struct sp_sa *sp_slot_get(struct sp_sa **slot) { return __atomic_load_n(slot, __ATOMIC_ACQUIRE); }
*/
import "C"

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

func beFromAddr(a netip.Addr) C.uint32_t {
	b := a.As4()
	// network order in memory = the bytes as they are
	return C.uint32_t(binary.NativeEndian.Uint32(b[:]))
}

// addrC is an address as the C structs keep it: network order, IPv4 in
// the first 4 bytes.
func addrC(a netip.Addr) (c [16]C.uint8_t) {
	for i, b := range a.AsSlice() {
		c[i] = C.uint8_t(b)
	}
	return c
}

// maskC is prefix p's mask as two 64-bit words in memory order, and its
// masked address the same way (struct sp_policy6).
func maskC(p netip.Prefix) (addr, mask [2]C.uint64_t) {
	a := p.Masked().Addr().As16()
	var m [16]byte
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	for w := range 2 {
		addr[w] = C.uint64_t(binary.NativeEndian.Uint64(a[w*8:]))
		mask[w] = C.uint64_t(binary.NativeEndian.Uint64(m[w*8:]))
	}
	return addr, mask
}

// AddSA creates the SA and publishes it to the loop. The key crosses into C
// once; sa's key bytes are wiped before AddSA returns.
func (f *Fastpath) AddSA(sa *model.SA) error {
	defer sa.Wipe()
	sp, err := checkSA(sa)
	if err != nil {
		return fmt.Errorf("add SA %s: %w", sa.SAID, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.mu.sas[sa.SAID]; dup {
		return fmt.Errorf("add SA %s: %w", sa.SAID, model.ErrExists)
	}
	if len(f.mu.sas) >= int(f.maxSAs) {
		return fmt.Errorf("add SA %s: the fast path holds %d SAs, its fastpath.max_sas", sa.SAID, f.maxSAs)
	}

	// parameters (with the keys) in C memory, wiped right after use
	p := newParams()
	defer freeParams(p)
	f.fillParams(p, sa, sp)
	if sp.saltLen > 0 {
		C.memcpy(unsafe.Pointer(&p.salt), unsafe.Pointer(&sa.EncKey[sp.keyLen]), 4)
	}
	if sp.keyLen > 0 {
		C.memcpy(unsafe.Pointer(&p.key[0]), unsafe.Pointer(&sa.EncKey[0]), C.size_t(sp.keyLen))
	}
	if sp.authKeyLen > 0 {
		C.memcpy(unsafe.Pointer(&p.auth_key[0]), unsafe.Pointer(&sa.IntKey[0]), C.size_t(sp.authKeyLen))
	}

	var ebuf [256]C.char
	c := C.sp_sa_create(p, f.sessPool, &ebuf[0], C.size_t(len(ebuf)))
	if c == nil {
		return fmt.Errorf("add SA %s: %s", sa.SAID, cerr(ebuf[:]))
	}
	e := &saEntry{c: c, sa: *sa, params: sp, crypto: f.cdevNameOf(int(C.sp_sa_cdev(c)))}
	if e.crypto != f.cdevs[0].name {
		f.log.Info("SA runs on another crypto device: the preferred one lacks its suite",
			"spi", fmt.Sprintf("0x%08x", sa.SPI), "suite", sp.name, "crypto", e.crypto)
	}
	e.sa.EncKey, e.sa.IntKey = nil, nil
	if sa.Inbound {
		// in place: the SAD takes it at once
		if rc := C.sp_sad_add(f.dp, c); rc != 0 {
			C.sp_sa_free(c)
			return fmt.Errorf("add SA %s: SAD: errno %d (fastpath.max_sas reached?)", sa.SAID, -rc)
		}
	}
	// an outbound SA carries traffic once a policy is bound to it (Bind)
	f.mu.sas[sa.SAID] = e
	return nil
}

// DelSA unpublishes the SA, waits until the loop cannot see it and frees it.
func (f *Fastpath) DelSA(id model.SAID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.mu.sas[id]
	if !ok {
		return fmt.Errorf("delete SA %s: %w", id, model.ErrNotFound)
	}
	delete(f.mu.sas, id)
	var err error
	if e.sa.Inbound {
		if rc := C.sp_sad_del(f.dp, e.c); rc != 0 {
			err = fmt.Errorf("delete SA %s: SAD: errno %d", id, -rc)
		}
	}
	// no published policy may point at it (the control plane rebinds
	// first; this is the guarantee)
	f.repointLocked(id, e.c, nil)
	delete(f.mu.orphans, id)
	C.sp_synchronize(f.dp) // then no worker holds it
	C.sp_sa_free(e.c)
	return err
}

// repointLocked makes every published policy slot that holds old hold
// neu, for the policies bound to id, and for those taken out but still in
// the published tables.
func (f *Fastpath) repointLocked(id model.SAID, old, neu *C.struct_sp_sa) {
	for pid := range f.mu.bySA[id] {
		if st := f.mu.pols[pid]; st != nil && st.slot != nil && C.sp_slot_get(st.slot) == old {
			C.sp_slot_set(st.slot, neu)
		}
	}
	for _, st := range f.mu.orphans[id] {
		if C.sp_slot_get(st.slot) == old {
			C.sp_slot_set(st.slot, neu)
		}
	}
}

// nextSeq is the first unused outbound sequence number of an SA that
// started at start (rte_ipsec starts at 1 when given 0) and sent packets.
func nextSeq(start, packets uint64) uint64 {
	return max(start, 1) + packets
}

func newParams() *C.struct_sp_sa_params {
	return (*C.struct_sp_sa_params)(C.calloc(1, C.sizeof_struct_sp_sa_params))
}

func freeParams(p *C.struct_sp_sa_params) {
	C.memset(unsafe.Pointer(p), 0, C.sizeof_struct_sp_sa_params)
	C.free(unsafe.Pointer(p))
}

// fillParams sets everything of p but the key material.
func (f *Fastpath) fillParams(p *C.struct_sp_sa_params, sa *model.SA, sp params) {
	p.spi = C.uint32_t(sa.SPI)
	p.reqid = C.uint32_t(sa.Reqid)
	p.src, p.dst = addrC(sa.Src), addrC(sa.Dst)
	p.family = 4
	if sa.Src.Is6() {
		p.family = 6
	}
	p.transport = boolC(sa.Mode == model.ModeTransport)
	p.sport = C.uint16_t(sa.SrcPort)
	p.dport = C.uint16_t(sa.DstPort)
	p.inbound = boolC(sa.Inbound)
	p.encap = boolC(sa.Encap)
	p.esn = boolC(sa.ESN)
	p.icv_len = C.uint8_t(sp.icv)
	p.replay_window = C.uint32_t(sa.ReplayWindow)
	p.seq_start = C.uint64_t(sa.SeqStart)
	p.hard_packets = C.uint64_t(sa.Hard.Packets)
	p.hard_bytes = C.uint64_t(sa.Hard.Bytes)
	p.enc, p.auth = sp.enc, sp.auth
	p.key_len = C.uint8_t(sp.keyLen)
	p.auth_key_len = C.uint8_t(sp.authKeyLen)
	for i, d := range f.cdevs {
		p.cdevs[i] = C.uint8_t(d.id)
	}
	p.n_cdevs = C.uint8_t(len(f.cdevs))
	p.sync_crypto = boolC(!f.asyncCrypto)
	p.multi_worker = boolC(len(f.workers) > 1)
}

// MoveSA gives an SA new addresses and ports. The new SA takes over the
// old one's crypto session (the keys stay in the PMD), continues its
// sequence numbers and counters, and replaces it in the tables.
func (f *Fastpath) MoveSA(id model.SAID, src, dst netip.Addr, sport, dport uint16, encap bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.mu.sas[id]
	if !ok {
		return fmt.Errorf("move SA %s: %w", id, model.ErrNotFound)
	}
	if src.Is4() != dst.Is4() {
		return fmt.Errorf("move SA %s to %s -> %s: %w", id, src, dst, model.ErrInvalid)
	}
	if encap && e.sa.Mode == model.ModeTransport {
		return fmt.Errorf("move SA %s: transport mode with UDP encapsulation: %w", id, model.ErrUnsupported)
	}
	sa := e.sa
	sa.Src, sa.Dst, sa.SrcPort, sa.DstPort, sa.Encap = src, dst, sport, dport, encap
	if _, dup := f.mu.sas[sa.SAID]; dup && sa.SAID != id {
		return fmt.Errorf("move SA %s: %s: %w", id, sa.SAID, model.ErrExists)
	}
	p := newParams()
	defer freeParams(p)
	f.fillParams(p, &sa, e.params)
	// Stop the old SA and wait out the loop's bursts in flight: then its
	// counters, and so its last sequence number, are final. The packets
	// of this short moment are dropped (drop_expired); the new SA must not
	// start below a number the old one could still send (AES-GCM IV).
	dead := C.sp_sa_dead(e.c) // expired or blocked before: the new SA is too
	C.sp_sa_kill(e.c)
	C.sp_synchronize(f.dp)
	st, ctr := e.c.st, e.c.ctr
	if sa.Inbound {
		// the replay window starts above the highest number received
		p.seq_start = C.uint64_t(f.sum(e.c).seqSeen)
	} else {
		// continue after the last number sent; the counters go on, so
		// SeqUsed stays start + packets
		p.seq_start = C.uint64_t(nextSeq(sa.SeqStart, f.sum(e.c).packets))
	}
	var ebuf [256]C.char
	c := C.sp_sa_move(p, e.c, &ebuf[0], C.size_t(len(ebuf)))
	if c == nil {
		C.sp_sa_set_dead(e.c, dead)
		return fmt.Errorf("move SA %s: %s", id, cerr(ebuf[:]))
	}
	c.st, c.ctr = st, ctr
	C.sp_sa_set_dead(c, dead)
	c.lim_packets, c.lim_bytes = e.c.lim_packets, e.c.lim_bytes
	old := e.c
	ne := &saEntry{c: c, sa: sa, params: e.params, crypto: e.crypto}
	delete(f.mu.sas, id)
	f.mu.sas[sa.SAID] = ne
	var err error
	if sa.Inbound {
		// same SPI: the SAD entry now points at the new SA
		if rc := C.sp_sad_add(f.dp, c); rc != 0 {
			err = fmt.Errorf("move SA %s: SAD: errno %d", id, -rc)
		}
	} else {
		// the policies bound to it follow, under its new ID
		f.repointLocked(id, old, c)
		if o := f.mu.orphans[id]; o != nil && sa.SAID != id {
			f.mu.orphans[sa.SAID] = append(f.mu.orphans[sa.SAID], o...)
			delete(f.mu.orphans, id)
		}
		if pids := f.mu.bySA[id]; pids != nil && sa.SAID != id {
			for pid := range pids {
				f.mu.pols[pid].b.SA = sa.SAID
			}
			f.mu.bySA[sa.SAID] = pids
			delete(f.mu.bySA, id)
		}
	}
	C.sp_synchronize(f.dp) // nobody uses old after this
	C.sp_sa_free(old)
	return err
}

// ExpireSA makes the loop drop every packet of the SA from now on.
func (f *Fastpath) ExpireSA(id model.SAID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.mu.sas[id]
	if !ok {
		return fmt.Errorf("expire SA %s: %w", id, model.ErrNotFound)
	}
	C.sp_sa_kill(e.c)
	return nil
}

// BlockSA makes the loop drop every packet of an outbound SA from now on
// as drop_seq: no sequence number is known safe for it. It stays
// installed (and bound) until charon's rekey replaces it.
func (f *Fastpath) BlockSA(id model.SAID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.mu.sas[id]
	if !ok {
		return fmt.Errorf("block SA %s: %w", id, model.ErrNotFound)
	}
	if e.sa.Inbound {
		return fmt.Errorf("block SA %s: inbound: %w", id, model.ErrInvalid)
	}
	C.sp_sa_block(e.c)
	return nil
}

// polState is a policy as the fast path keeps it: the binding, and where
// its SA pointer sits in the published tables (nil until published).
type polState struct {
	b    dataplane.Binding
	slot **C.struct_sp_sa
}

func checkPolicy(p *model.Policy) error {
	if p.Sel.Src.Addr().Is4() != p.Sel.Dst.Addr().Is4() {
		return fmt.Errorf("policy %s: %w (source and destination of different families)", p.Sel, model.ErrInvalid)
	}
	return nil
}

// SetPolicies replaces every policy and publishes the tables at once.
func (f *Fastpath) SetPolicies(b []dataplane.Binding) error {
	for _, x := range b {
		if err := checkPolicy(x.Policy); err != nil {
			return fmt.Errorf("set policies: %w", err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, st := range f.mu.pols {
		f.orphanLocked(st)
	}
	f.mu.pols = make(map[model.PolicyID]*polState, len(b))
	f.mu.bySA = make(map[model.SAID]map[model.PolicyID]struct{})
	for _, x := range b {
		f.putLocked(x)
	}
	f.mu.gen++
	f.mu.removed++
	return f.publishIPsecLocked()
}

// putLocked stores a binding (the policy copied).
func (f *Fastpath) putLocked(b dataplane.Binding) {
	p := *b.Policy
	b.Policy = &p
	if old := f.mu.pols[p.PolicyID]; old != nil {
		f.unbindLocked(p.PolicyID, old)
		f.orphanLocked(old)
		f.mu.removed++ // the old one is out of the tables being built
	}
	f.mu.gen++
	f.mu.pols[p.PolicyID] = &polState{b: b}
	f.bindLocked(p.PolicyID, b)
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
	if err := checkPolicy(b.Policy); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.mu.pols[b.Policy.PolicyID]; old != nil && *old.b.Policy == *b.Policy {
		// the same policy again (another CHILD_SA using it): a binding
		// change at most
		return f.bindInPlaceLocked(b.Policy.PolicyID, b.SA, b.HasSA)
	}
	f.putLocked(b)
	return f.changedLocked()
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
	f.mu.gen++
	f.mu.removed++
	return f.changedLocked()
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

// coalesceAbove is the number of policies from which policy table rebuilds
// are coalesced (see changedLocked).
const coalesceAbove = 100

// changedLocked publishes the policy tables now, or soon when they are big
// and were rebuilt a moment ago. The caller counted the change (gen, and
// removed if a policy went out).
func (f *Fastpath) changedLocked() error {
	if f.mu.timer != nil || f.mu.building {
		return nil // a rebuild is due, or runs and follows up
	}
	// Up to a hundred policies the tables are rebuilt at once, so that a
	// policy is in force when charon's request returns. Beyond, outside the
	// lock and at most once per interval of a few times the last rebuild's
	// cost, so that a burst of installs neither waits for rebuilds nor
	// rebuilds per policy.
	if len(f.mu.pols) < coalesceAbove {
		return f.publishIPsecLocked()
	}
	if f.mu.closing {
		return nil
	}
	every := min(4*f.mu.lastBuild, 100*time.Millisecond)
	wait := max(every-time.Since(f.mu.lastPublish), 0)
	f.mu.timerSeq++
	seq := f.mu.timerSeq
	f.mu.timer = time.AfterFunc(wait, func() { f.rebuild(seq) })
	return nil
}

func (f *Fastpath) cdevNameOf(id int) string {
	for _, d := range f.cdevs {
		if int(d.id) == id {
			return d.name
		}
	}
	return fmt.Sprintf("cryptodev%d", id)
}

func boolC(b bool) C.uint8_t {
	if b {
		return 1
	}
	return 0
}

func maskBE(p netip.Prefix) C.uint32_t {
	if p.Bits() == 0 {
		return 0
	}
	m := ^uint32(0) << (32 - p.Bits())
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], m)
	return C.uint32_t(binary.NativeEndian.Uint32(b[:]))
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
// policies by table, in table order, and the change counters of that moment.
type polSnap struct {
	out, in, out6, in6 []*polState
	gen, removed       uint64
	start              time.Time
}

// snapshotLocked takes the policy set for a rebuild. Only the lists are
// taken here: a polState's policy never changes (a changed policy is a new
// polState), so the tables can be built from them outside the lock.
func (f *Fastpath) snapshotLocked() *polSnap {
	s := &polSnap{gen: f.mu.gen, removed: f.mu.removed, start: time.Now()}
	for _, st := range f.mu.pols {
		v6 := st.b.Policy.Sel.Src.Addr().Is6()
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
	outs := unsafe.Slice(t.out, len(s.out)+1)
	for i, st := range s.out {
		fillPolicy(&outs[i], st.b.Policy)
	}
	ins := unsafe.Slice(t.in, len(s.in)+1)
	for i, st := range s.in {
		fillPolicy(&ins[i], st.b.Policy)
	}
	outs6 := unsafe.Slice(t.out6, len(s.out6)+1)
	for i, st := range s.out6 {
		fillPolicy6(&outs6[i], st.b.Policy)
	}
	ins6 := unsafe.Slice(t.in6, len(s.in6)+1)
	for i, st := range s.in6 {
		fillPolicy6(&ins6[i], st.b.Policy)
	}
	if h := buildHook.Load(); h != nil {
		(*h)()
	}
	var ebuf [256]C.char
	if C.sp_ipsec_tables_build_acl(t, &ebuf[0], C.size_t(len(ebuf))) != 0 {
		C.sp_ipsec_tables_free(t)
		return nil, fmt.Errorf("build policy tables: %s", cerr(ebuf[:]))
	}
	return t, nil
}

// buildHook, when set (tests), runs in every rebuild between taking the
// policies and building the rte_acl contexts.
var buildHook atomic.Pointer[func()]

// installLocked points the outbound policies of t at their SAs as bound
// now, publishes t and frees the previous tables after a grace period.
// No policy of s may have been removed since s was taken.
func (f *Fastpath) installLocked(t *C.struct_sp_ipsec_tables, s *polSnap) {
	f.mu.lastBuild = time.Since(s.start)
	outs := unsafe.Slice(t.out_sa, len(s.out)+1)
	outs6 := unsafe.Slice(t.out6_sa, len(s.out6)+1)
	for _, st := range f.mu.pols {
		st.slot = nil // a policy added since s is in no table yet
	}
	// from now on Bind changes the SA pointers of the published tables
	for i, st := range s.out {
		outs[i] = f.saPtrLocked(st.b)
		st.slot = &outs[i]
	}
	for i, st := range s.out6 {
		outs6[i] = f.saPtrLocked(st.b)
		st.slot = &outs6[i]
	}
	old := f.mu.ipsec
	C.sp_publish_ipsec(f.dp, t)
	f.mu.ipsec = t
	f.mu.pubGen = s.gen
	f.mu.installs++
	f.mu.stale = false
	f.mu.orphans = nil // their slots were in the tables just freed
	C.sp_synchronize(f.dp)
	C.sp_ipsec_tables_free(old)
	f.mu.lastPublish = time.Now()
}

// publishIPsecLocked rebuilds the policy tables under the lock and
// publishes them.
func (f *Fastpath) publishIPsecLocked() error {
	if f.mu.timer != nil {
		f.mu.timer.Stop()
		f.mu.timer = nil
	}
	s := f.snapshotLocked()
	t, err := buildTables(s)
	if err != nil {
		return err
	}
	f.installLocked(t, s)
	return nil
}

// rebuild rebuilds the policy tables outside the lock, so that requests go
// on meanwhile: policies added meanwhile wait for the next rebuild, binding
// changes are taken over when the tables are installed. If a policy was
// removed meanwhile, the tables are stale: they are thrown away and the
// next rebuild runs under the lock (so that a stream of removals cannot
// starve the rebuilds).
func (f *Fastpath) rebuild(seq uint64) {
	f.mu.Lock()
	if f.mu.timerSeq == seq {
		f.mu.timer = nil // this one fired (not a later one)
	}
	if f.dp == nil || f.mu.closing || f.mu.building {
		f.mu.Unlock()
		return
	}
	if f.mu.stale {
		err := f.publishIPsecLocked()
		if err != nil {
			f.log.Error("policy tables not rebuilt", "err", err)
		} else {
			f.followUpLocked()
		}
		f.mu.Unlock()
		return
	}
	f.mu.building = true
	f.builds.Add(1)
	defer f.builds.Done()
	s := f.snapshotLocked()
	f.mu.Unlock()

	t, err := buildTables(s)

	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.building = false
	switch {
	case err != nil:
		// the next change tries again
		f.log.Error("policy tables not rebuilt", "err", err)
		return
	case f.mu.closing:
		C.sp_ipsec_tables_free(t)
		return
	case s.removed != f.mu.removed || s.gen < f.mu.pubGen:
		C.sp_ipsec_tables_free(t)
		f.mu.stale = s.removed != f.mu.removed
	default:
		f.installLocked(t, s)
	}
	f.followUpLocked()
}

// followUpLocked schedules the next rebuild if the policies changed since
// the published tables.
func (f *Fastpath) followUpLocked() {
	if f.mu.gen != f.mu.pubGen {
		if err := f.changedLocked(); err != nil {
			f.log.Error("policy tables not rebuilt", "err", err)
		}
	}
}

// SetFIB replaces the forwarding tables.
func (f *Fastpath) SetFIB(fib dataplane.FIB) error {
	routes := fib.Routes
	var neighs []dataplane.Neigh
	for _, n := range fib.Neighs {
		if n.IP.IsValid() && len(n.MAC) == 6 && n.Port >= 0 && n.Port < len(f.ports) {
			neighs = append(neighs, n)
		}
	}
	t := C.sp_fib_new(C.uint32_t(len(routes)), C.uint32_t(len(neighs)))
	if t == nil {
		return fmt.Errorf("build FIB: out of memory")
	}
	nhs := unsafe.Slice(t.nh, len(routes)+1)
	for i, r := range routes {
		nh := &nhs[i]
		nh.port = C.uint8_t(r.Port)
		switch {
		case r.Local:
			nh.kind = C.SP_NH_LOCAL
		case r.Blackhole || r.Port < 0 || r.Port >= len(f.ports):
			nh.kind = C.SP_NH_BLACKHOLE
		default:
			nh.kind = C.SP_NH_UNICAST
		}
		v4 := r.Dst.Addr().Is4()
		if r.Gateway.IsValid() && r.Gateway.Is4() == v4 {
			if v4 {
				nh.gw = beFromAddr(r.Gateway)
			} else {
				nh.gw6 = addrC(r.Gateway)
			}
		}
		// rte_lpm and rte_lpm6 take depths from 1: a default route is
		// two halves
		pfx := r.Dst.Masked()
		parts := []netip.Prefix{pfx}
		if pfx.Bits() == 0 && v4 {
			parts = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
		} else if pfx.Bits() == 0 {
			parts = []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
		}
		for _, p := range parts {
			var rc C.int
			if v4 {
				rc = C.sp_fib_add_route(t, beFromAddr(p.Addr()), C.uint8_t(p.Bits()), C.uint32_t(i))
			} else {
				a := addrC(p.Addr())
				rc = C.sp_fib_add_route6(t, &a[0], C.uint8_t(p.Bits()), C.uint32_t(i))
			}
			if rc != 0 {
				C.sp_fib_free(t)
				return fmt.Errorf("FIB add %s: errno %d", p, -rc)
			}
		}
		// the gateway's own addresses: sources of ICMP errors
		if r.Local && r.Dst.IsSingleIP() && !r.Dst.Addr().IsLoopback() && !r.Dst.Addr().IsLinkLocalUnicast() {
			if v4 && t.src4 == 0 {
				t.src4 = beFromAddr(r.Dst.Addr())
			} else if !v4 && t.src6 == [16]C.uint8_t{} {
				t.src6 = addrC(r.Dst.Addr())
			}
		}
	}
	own4, own6 := ownAddrs(fib.Addrs)
	var p4 *C.uint32_t
	var p6 *C.uint8_t
	if len(own4) > 0 {
		p4 = (*C.uint32_t)(unsafe.Pointer(&own4[0]))
	}
	if len(own6) > 0 {
		p6 = (*C.uint8_t)(unsafe.Pointer(&own6[0][0]))
	}
	if rc := C.sp_fib_set_own(t, C.uint32_t(len(own4)), p4, C.uint32_t(len(own6)), p6); rc != 0 {
		C.sp_fib_free(t)
		return fmt.Errorf("FIB own addresses (%d IPv4, %d IPv6): errno %d", len(own4), len(own6), -rc)
	}
	for i, n := range neighs {
		var rc C.int
		mac := (*C.uint8_t)(unsafe.Pointer(&n.MAC[0]))
		if n.IP.Is4() {
			rc = C.sp_fib_add_neigh(t, beFromAddr(n.IP), C.uint32_t(n.Port), mac, C.uint32_t(i))
		} else {
			a := addrC(n.IP)
			rc = C.sp_fib_add_neigh6(t, &a[0], C.uint32_t(n.Port), mac, C.uint32_t(i))
		}
		if rc != 0 {
			C.sp_fib_free(t)
			return fmt.Errorf("neighbour add %s: errno %d", n.IP, -rc)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.mu.fib
	C.sp_publish_fib(f.dp, t)
	f.mu.fib = t
	C.sp_synchronize(f.dp)
	C.sp_fib_free(old)
	return nil
}

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
	if e.sa.Inbound {
		c.SeqUsed, c.SeqSeen = 0, st.seqSeen
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
