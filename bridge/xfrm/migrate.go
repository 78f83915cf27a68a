package xfrm

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/model"
)

// XFRM_MSG_MIGRATE: an IKE daemon moves a policy and its SAs to new
// endpoints (libreswan's MOBIKE, Mobile IPv6) in one request. The kernel
// (net/xfrm/xfrm_policy.c, xfrm_migrate) clones each matching state with
// the new addresses (and the request's UDP encapsulation, if any), rewrites
// the policy's templates in place and deletes the old states, then tells
// listeners of XFRMNLGRP_MIGRATE (net/xfrm/xfrm_user.c, xfrm_send_migrate).
// It sends no NEWSA, DELSA or policy notification for any of that: the
// MIGRATE message is the only news of it.
//
// The mirror moves its SAs (the engine's UpdateSA: the fast path keeps the
// SA, its sequence numbers and its replay window; re-adding it would start
// the sequence numbers again under the same key) and re-points the
// mirrored policies' templates. strongSwan's kernel-netlink does not use
// MIGRATE: its MOBIKE update deletes the SA and adds it again (DELSA,
// NEWSA), which the mirror follows as a deletion and an addition.
//
// Note: Linux sends MIGRATE notifications to the initial network namespace
// only (xfrm_send_migrate uses &init_net), so a mirror in another
// namespace never hears of one; its next resync (after an overrun) repairs
// the policies, but its SAs would be deleted and added again.

// struct xfrm_user_migrate and struct xfrm_user_kmaddress
// (include/uapi/linux/xfrm.h).
const (
	sizeofUserMigrate   = 4*16 + 1 + 1 + 2 + 4 + 2 + 2
	sizeofUserKmaddress = 2*16 + 4 + 2 + 2
	xfrmPolicyTypeMain  = 0
	migrateProto        = 64
	migrateMode         = 65
	migrateReqid        = 68
	migrateOldFamily    = 72
	migrateNewFamily    = 74
	migrateMaxEntries   = 6 // XFRM_MAX_DEPTH: more is a malformed message
)

// Move is one SA's change of endpoints in a migration (struct
// xfrm_user_migrate).
type Move struct {
	OldSrc, OldDst netip.Addr
	NewSrc, NewDst netip.Addr
	Proto          uint8 // 50 for ESP
	Mode           uint8 // 0 transport, 1 tunnel
	Reqid          uint32
}

// migration is an XFRM_MSG_MIGRATE as the kernel sends it (and takes it).
type migration struct {
	sel     nl.XfrmSelector
	dir     uint8
	subType bool
	moves   []Move
	encap   *nl.XfrmEncapTmpl
}

// parseMigrate reads XFRM_MSG_MIGRATE: xfrm_userpolicy_id, then
// XFRMA_MIGRATE (one xfrm_user_migrate per attribute from the kernel, an
// array in one attribute in a request: both are read), and optionally
// XFRMA_KMADDRESS, XFRMA_ENCAP and XFRMA_POLICY_TYPE.
func parseMigrate(b []byte) (*migration, error) {
	if len(b) < nl.SizeofXfrmUserpolicyId {
		return nil, fmt.Errorf("xfrm_userpolicy_id: %d bytes: %w", len(b), errShort)
	}
	id := nl.DeserializeXfrmUserpolicyId(b)
	mg := &migration{sel: id.Sel, dir: id.Dir}
	attrs, err := parseAttrs(b[nl.SizeofXfrmUserpolicyId:])
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		switch a.typ {
		case nl.XFRMA_MIGRATE:
			d := a.data
			if len(d) == 0 || len(d)%sizeofUserMigrate != 0 {
				return nil, fmt.Errorf("XFRMA_MIGRATE: %d bytes: %w", len(d), errShort)
			}
			for ; len(d) > 0; d = d[sizeofUserMigrate:] {
				mv, err := parseMove(d[:sizeofUserMigrate])
				if err != nil {
					return nil, err
				}
				mg.moves = append(mg.moves, mv)
			}
		case nl.XFRMA_ENCAP:
			if len(a.data) < nl.SizeofXfrmEncapTmpl {
				return nil, fmt.Errorf("XFRMA_ENCAP: %w", errShort)
			}
			e := *nl.DeserializeXfrmEncapTmpl(a.data)
			mg.encap = &e
		case nl.XFRMA_POLICY_TYPE:
			if len(a.data) >= 1 && a.data[0] != xfrmPolicyTypeMain {
				mg.subType = true
			}
		case nl.XFRMA_KMADDRESS:
			// the IKE endpoints (Mobile IPv6): nothing the fast path keeps
			if len(a.data) < sizeofUserKmaddress {
				return nil, fmt.Errorf("XFRMA_KMADDRESS: %w", errShort)
			}
		}
	}
	if len(mg.moves) == 0 {
		return nil, fmt.Errorf("migrate without XFRMA_MIGRATE: %w", errShort)
	}
	if len(mg.moves) > migrateMaxEntries {
		return nil, fmt.Errorf("migrate of %d templates (the kernel allows %d): %w", len(mg.moves), migrateMaxEntries, model.ErrInvalid)
	}
	return mg, nil
}

func parseMove(d []byte) (Move, error) {
	var x [4]nl.XfrmAddress
	for i := range x {
		copy(x[i][:], d[16*i:16*i+16])
	}
	oldFam, newFam := native.Uint16(d[migrateOldFamily:]), native.Uint16(d[migrateNewFamily:])
	mv := Move{
		OldDst: addr(x[0], oldFam), OldSrc: addr(x[1], oldFam),
		NewDst: addr(x[2], newFam), NewSrc: addr(x[3], newFam),
		Proto: d[migrateProto], Mode: d[migrateMode], Reqid: native.Uint32(d[migrateReqid:]),
	}
	if !mv.OldDst.IsValid() || !mv.NewDst.IsValid() {
		return Move{}, fmt.Errorf("migrate families %d -> %d: %w", oldFam, newFam, model.ErrInvalid)
	}
	return mv, nil
}

func moveBytes(mv Move) []byte {
	b := make([]byte, sizeofUserMigrate)
	for i, a := range []netip.Addr{mv.OldDst, mv.OldSrc, mv.NewDst, mv.NewSrc} {
		x := xaddr(a)
		copy(b[16*i:], x[:])
	}
	b[migrateProto], b[migrateMode] = mv.Proto, mv.Mode
	native.PutUint32(b[migrateReqid:], mv.Reqid)
	native.PutUint16(b[migrateOldFamily:], family(mv.OldDst))
	native.PutUint16(b[migrateNewFamily:], family(mv.NewDst))
	return b
}

// MigrateRequest is the XFRM_MSG_MIGRATE request (payload after the
// netlink header) that moves the policy of selector src -> dst (any
// protocol and port) in direction dir (0 in, 1 out, 2 fwd) and the SAs of
// moves to their new endpoints, as an IKE daemon sends it; with encap, the
// migrated SAs are ESP-in-UDP between ports sport and dport. For tests
// and tools: iproute2 has no command for it.
func MigrateRequest(src, dst netip.Prefix, dir uint8, moves []Move, encap bool, sport, dport uint16) []byte {
	var sel nl.XfrmSelector
	sel.Family = family(dst.Addr())
	sel.Saddr, sel.Daddr = xaddr(src.Addr()), xaddr(dst.Addr())
	sel.PrefixlenS, sel.PrefixlenD = uint8(src.Bits()), uint8(dst.Bits())
	id := nl.XfrmUserpolicyId{Sel: sel, Dir: dir}
	b := structBytes(&id)
	var ms []byte
	for _, mv := range moves {
		ms = append(ms, moveBytes(mv)...)
	}
	b = putAttr(b, nl.XFRMA_MIGRATE, ms)
	if encap {
		t := nl.XfrmEncapTmpl{EncapType: udpEncapESPinUDP, EncapSport: htons(sport), EncapDport: htons(dport)}
		b = putAttr(b, nl.XFRMA_ENCAP, structBytes(&t))
	}
	return b
}

// migrate follows an XFRM_MSG_MIGRATE: the mirrored SAs of each move go to
// their new endpoints in the engine (kept, not re-added), then the
// mirrored policies of the selector and direction whose template had the
// old endpoints get the new ones.
func (m *Mirror) migrate(ctx context.Context, mg *migration) {
	if mg.subType {
		return
	}
	for _, mv := range mg.moves {
		m.mu.Lock()
		var recs []*saRec
		for _, r := range m.mu.sas {
			if r.id.Dst == mv.OldDst && r.src == mv.OldSrc && r.id.Proto == mv.Proto && (mv.Reqid == 0 || r.reqid == mv.Reqid) {
				recs = append(recs, r)
			}
		}
		m.mu.Unlock()
		for _, r := range recs {
			encap, sport, dport := r.encap, r.sport, r.dport
			if mg.encap != nil {
				encap, sport, dport = true, ntohs(mg.encap.EncapSport), ntohs(mg.encap.EncapDport)
			}
			old := r.id
			if err := m.eng.UpdateSA(ctx, old, r.src, mv.NewSrc, mv.NewDst, sport, dport, encap); err != nil {
				// the kernel's copy moved and this one cannot: the
				// fast path must not send on from the old endpoints
				m.log.Warn("xfrm mirror: migrating SA failed, deleting it", "spi", spiStr(old.SPI), "reqid", r.reqid, "err", err)
				m.delSA(ctx, old)
				continue
			}
			m.mu.Lock()
			delete(m.mu.sas, old)
			r.id.Dst, r.src, r.encap, r.sport, r.dport = mv.NewDst, mv.NewSrc, encap, sport, dport
			m.mu.sas[r.id] = r
			m.mu.Unlock()
			m.log.Info("xfrm mirror: SA migrated", "spi", spiStr(old.SPI), "reqid", r.reqid,
				"src", mv.NewSrc.String(), "dst", mv.NewDst.String(), "encap", encap)
		}
	}
	sel, err := toSelector(&mg.sel)
	if err != nil || mg.dir > xfrmDirFwd {
		return
	}
	for id, rec := range m.pols {
		if id.Sel != sel || id.Dir != model.Dir(mg.dir) || rec.pol.Mode != model.ModeTunnel {
			continue
		}
		p := rec.pol
		for _, mv := range mg.moves {
			if p.TmplSrc == mv.OldSrc && p.TmplDst == mv.OldDst && (mv.Reqid == 0 || p.Reqid == mv.Reqid) {
				p.TmplSrc, p.TmplDst = mv.NewSrc, mv.NewDst
				break
			}
		}
		if p == rec.pol {
			continue
		}
		// as applyPolicy replaces one: added again, the old reference
		// dropped (the engine swaps the policy in place)
		if err := m.eng.AddPolicy(ctx, &p); err != nil {
			m.log.Warn("xfrm mirror: migrating policy failed, removing it", "sel", sel.String(), "dir", id.Dir.String(), "err", err)
			m.delPolicy(ctx, id)
			continue
		}
		if err := m.eng.DelPolicy(ctx, id); err != nil {
			m.log.Warn("xfrm mirror: replacing migrated policy", "sel", sel.String(), "err", err)
		}
		rec.pol = p
		m.log.Info("xfrm mirror: policy migrated", "sel", sel.String(), "dir", id.Dir.String(),
			"src", p.TmplSrc.String(), "dst", p.TmplDst.String())
	}
}
