package fastpath

// SA lifecycle: create (the key crosses into C once), move (MOBIKE, NAT),
// expire, block, delete after quiescence.

/*
#include <stdlib.h>
#include <string.h>
#include "dp_atomic.h"
*/
import "C"

import (
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/swanpath/swanpath/bridge/model"
)

// AddSA creates the SA and publishes it to the loop. The key crosses into C
// once; sa's key bytes are wiped before AddSA returns.
func (f *Fastpath) AddSA(sa *model.SA) error {
	defer sa.Wipe()
	sp, err := checkSA(sa, f.ifcs)
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

	if sa.Inbound && !ownsIfc(sa) {
		sp.ifc = f.reqIfcLocked(sa.Reqid) // ifcsa.go
	}
	// parameters (with the keys) in C memory, wiped right after use
	p := newParams()
	defer freeParams(p)
	f.fillParams(p, sa, sp)
	if sp.SaltLen > 0 {
		C.memcpy(unsafe.Pointer(&p.salt), unsafe.Pointer(&sa.EncKey[sp.KeyLen]), 4)
	}
	if sp.KeyLen > 0 {
		C.memcpy(unsafe.Pointer(&p.key[0]), unsafe.Pointer(&sa.EncKey[0]), C.size_t(sp.KeyLen))
	}
	if sp.authKeyLen() > 0 {
		C.memcpy(unsafe.Pointer(&p.auth_key[0]), unsafe.Pointer(&sa.IntKey[0]), C.size_t(sp.authKeyLen()))
	}

	var ebuf [256]C.char
	c := C.sp_sa_create(p, f.sessPool, &ebuf[0], C.size_t(len(ebuf)))
	if c == nil {
		return fmt.Errorf("add SA %s: %s", sa.SAID, cerr(ebuf[:]))
	}
	e := &saEntry{c: c, sa: *sa, params: sp, crypto: f.cdevNameOf(int(C.sp_sa_cdev(c)))}
	if e.crypto != f.cdevs[0].name {
		f.log.Info("SA runs on another crypto device: the preferred one lacks its suite",
			"spi", fmt.Sprintf("0x%08x", sa.SPI), "suite", sp.Name, "crypto", e.crypto)
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
	e, err := f.saLocked("delete SA", id)
	if err != nil {
		return err
	}
	delete(f.mu.sas, id)
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
	p.ifc = C.uint8_t(sp.ifc)
	p.encap = boolC(sa.Encap)
	p.esn = boolC(sa.ESN)
	p.icv_len = C.uint8_t(sp.ICV)
	p.replay_window = C.uint32_t(sa.ReplayWindow)
	p.seq_start = C.uint64_t(sa.SeqStart)
	p.hard_packets = C.uint64_t(sa.Hard.Packets)
	p.hard_bytes = C.uint64_t(sa.Hard.Bytes)
	p.enc, p.auth = sp.enc(), sp.auth()
	p.key_len = C.uint8_t(sp.KeyLen)
	p.auth_key_len = C.uint8_t(sp.authKeyLen())
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
	e, err := f.saLocked("move SA", id)
	if err != nil {
		return err
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

// saLocked is SA id, or ErrNotFound in op's words.
func (f *Fastpath) saLocked(op string, id model.SAID) (*saEntry, error) {
	e, ok := f.mu.sas[id]
	if !ok {
		return nil, fmt.Errorf("%s %s: %w", op, id, model.ErrNotFound)
	}
	return e, nil
}

// ExpireSA makes the loop drop every packet of the SA from now on.
func (f *Fastpath) ExpireSA(id model.SAID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, err := f.saLocked("expire SA", id)
	if err != nil {
		return err
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
	e, err := f.saLocked("block SA", id)
	if err != nil {
		return err
	}
	if e.sa.Inbound {
		return fmt.Errorf("block SA %s: inbound: %w", id, model.ErrInvalid)
	}
	C.sp_sa_block(e.c)
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
