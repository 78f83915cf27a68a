package xfrm

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/dataplane"
)

// migrateNote is XFRM_MSG_MIGRATE as the kernel multicasts it
// (build_migrate in net/xfrm/xfrm_user.c): xfrm_userpolicy_id, then
// XFRMA_KMADDRESS (when the daemon gave one), XFRMA_ENCAP (when it gave
// one), XFRMA_POLICY_TYPE, then one XFRMA_MIGRATE per template.
func migrateNote(p policySpec, encap *[2]uint16, ptype uint8, km bool, moves ...Move) []byte {
	id := nl.XfrmUserpolicyId{Sel: p.sel(), Dir: p.dir}
	b := structBytes(&id)
	if km {
		b = putAttr(b, nl.XFRMA_KMADDRESS, make([]byte, sizeofUserKmaddress))
	}
	if encap != nil {
		t := nl.XfrmEncapTmpl{EncapType: udpEncapESPinUDP, EncapSport: htons(encap[0]), EncapDport: htons(encap[1])}
		b = putAttr(b, nl.XFRMA_ENCAP, structBytes(&t))
	}
	b = putAttr(b, nl.XFRMA_POLICY_TYPE, []byte{ptype, 0, 0, 0, 0, 0})
	for _, mv := range moves {
		b = putAttr(b, nl.XFRMA_MIGRATE, moveBytes(mv))
	}
	return b
}

var (
	mustAddr = netip.MustParseAddr
	// the peer moves from 198.51.100.2 to 203.0.113.9 (saOut, saIn, polOut)
	mvOut = Move{OldSrc: mustAddr("192.0.2.1"), OldDst: mustAddr("198.51.100.2"), NewSrc: mustAddr("192.0.2.1"), NewDst: mustAddr("203.0.113.9"),
		Proto: 50, Mode: xfrmModeTunnel, Reqid: 7}
	mvIn = Move{OldSrc: mustAddr("198.51.100.2"), OldDst: mustAddr("192.0.2.1"), NewSrc: mustAddr("203.0.113.9"), NewDst: mustAddr("192.0.2.1"),
		Proto: 50, Mode: xfrmModeTunnel, Reqid: 7}
	mv6 = Move{OldSrc: mustAddr("2001:db8::1"), OldDst: mustAddr("2001:db8::2"), NewSrc: mustAddr("2001:db8::1"), NewDst: mustAddr("2001:db8:9::2"),
		Proto: 50, Mode: xfrmModeTransport}
)

func TestParseMigrate(t *testing.T) {
	req := MigrateRequest(netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.2.0.0/16"), xfrmDirOut,
		[]Move{mvOut, mvIn}, true, 4500, 4501)
	for _, c := range []struct {
		name  string
		b     []byte
		sel   nl.XfrmSelector
		dir   uint8
		moves []Move
		encap *[2]uint16
		sub   bool
	}{
		{name: "kernel notification", b: migrateNote(polOut, nil, 0, false, mvOut),
			sel: polOut.sel(), dir: xfrmDirOut, moves: []Move{mvOut}},
		{name: "kernel notification, encap, kmaddress, two templates", b: migrateNote(polIn, &[2]uint16{4500, 4500}, 0, true, mvIn, mvOut),
			sel: polIn.sel(), dir: xfrmDirIn, moves: []Move{mvIn, mvOut}, encap: &[2]uint16{4500, 4500}},
		{name: "IPv6 transport", b: migrateNote(policySpec{src: "2001:db8::1/128", dst: "2001:db8::2/128", dir: xfrmDirOut}, nil, 0, false, mv6),
			sel: policySpec{src: "2001:db8::1/128", dst: "2001:db8::2/128"}.sel(), dir: xfrmDirOut, moves: []Move{mv6}},
		{name: "sub policy", b: migrateNote(polOut, nil, 1, false, mvOut), sel: polOut.sel(), dir: xfrmDirOut, moves: []Move{mvOut}, sub: true},
		{name: "request (one attribute, an array)", b: req, sel: polOut.sel(), dir: xfrmDirOut, moves: []Move{mvOut, mvIn}, encap: &[2]uint16{4500, 4501}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mg, err := parseMigrate(c.b)
			if err != nil {
				t.Fatal(err)
			}
			if mg.sel != c.sel || mg.dir != c.dir || mg.subType != c.sub || !slices.Equal(mg.moves, c.moves) {
				t.Fatalf("got sel %+v dir %d sub %v moves %+v", mg.sel, mg.dir, mg.subType, mg.moves)
			}
			if (mg.encap == nil) != (c.encap == nil) ||
				c.encap != nil && (ntohs(mg.encap.EncapSport) != c.encap[0] || ntohs(mg.encap.EncapDport) != c.encap[1]) {
				t.Fatalf("encap %+v, want %v", mg.encap, c.encap)
			}
		})
	}
	bad := map[string][]byte{
		"empty":            nil,
		"short header":     migrateNote(polOut, nil, 0, false, mvOut)[:nl.SizeofXfrmUserpolicyId-1],
		"no moves":         migrateNote(polOut, nil, 0, false),
		"short move":       putAttr(structBytes(&nl.XfrmUserpolicyId{Sel: polOut.sel()}), nl.XFRMA_MIGRATE, moveBytes(mvOut)[:sizeofUserMigrate-4]),
		"move and a half":  putAttr(structBytes(&nl.XfrmUserpolicyId{Sel: polOut.sel()}), nl.XFRMA_MIGRATE, append(moveBytes(mvOut), make([]byte, 20)...)),
		"attribute beyond": migrateNote(polOut, nil, 0, false, mvOut)[:nl.SizeofXfrmUserpolicyId+40],
		"short encap":      putAttr(migrateNote(polOut, nil, 0, false, mvOut), nl.XFRMA_ENCAP, make([]byte, 4)),
		"short kmaddress":  putAttr(migrateNote(polOut, nil, 0, false, mvOut), nl.XFRMA_KMADDRESS, make([]byte, 8)),
		"family 0":         putAttr(structBytes(&nl.XfrmUserpolicyId{Sel: polOut.sel()}), nl.XFRMA_MIGRATE, make([]byte, sizeofUserMigrate)),
		"seven templates":  migrateNote(polOut, nil, 0, false, mvOut, mvOut, mvOut, mvOut, mvOut, mvOut, mvOut),
	}
	for name, b := range bad {
		if mg, err := parseMigrate(b); err == nil {
			t.Errorf("%s: parsed as %+v", name, mg)
		}
	}
}

func FuzzParseMigrate(f *testing.F) {
	f.Add(migrateNote(polOut, nil, 0, false, mvOut))
	f.Add(migrateNote(polIn, &[2]uint16{4500, 4500}, 0, true, mvIn, mvOut))
	f.Add(MigrateRequest(netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("2001:db8::2/128"), xfrmDirOut, []Move{mv6}, false, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		mg, err := parseMigrate(b)
		if err == nil && (len(mg.moves) == 0 || len(mg.moves) > migrateMaxEntries) {
			t.Fatalf("accepted %d moves", len(mg.moves))
		}
	})
}

// TestMirrorMigrate: a MIGRATE moves the mirrored SAs in the engine (never
// deleted and added again: the fast path keeps their sequence numbers),
// re-points the policies' templates, and the counters then go to the
// kernel's SA at its new address; a dump afterwards (the kernel's states
// and policies now at the new addresses) changes nothing.
func TestMirrorMigrate(t *testing.T) {
	conn := newFakeConn()
	conn.sas = [][]byte{saIn.msg(), saOut.msg()}
	conn.pols = [][]byte{polOut.msg(), polIn.msg()}
	h := start(t, conn)

	// what the kernel sends when the daemon migrates both directions
	// (ESP-in-UDP from now on: the peer is behind a NAT at its new place)
	encap := &[2]uint16{4500, 4500}
	h.send(nil, Message{nl.XFRM_MSG_MIGRATE, migrateNote(polOut, encap, 0, false, mvOut)},
		Message{nl.XFRM_MSG_MIGRATE, migrateNote(polIn, encap, 0, false, mvIn)},
		// the kernel answers a fwd migrate with the same moves: the SAs
		// are already at their new addresses, nothing is moved twice
		Message{nl.XFRM_MSG_MIGRATE, migrateNote(policySpec{src: polIn.src, dst: polIn.dst, dir: xfrmDirFwd}, encap, 0, false, mvIn)})
	calls, nsas, pols := h.eng.snapshot()
	for _, want := range []string{"UpdateSA 0xc2000001 192.0.2.1:4500", "UpdateSA 0xc1000001 203.0.113.9:4500"} {
		if n := strings.Count(strings.Join(calls, "\n"), want); n != 1 {
			t.Errorf("%q %d times; calls %q", want, n, calls)
		}
	}
	for _, c := range calls {
		if strings.HasPrefix(c, "DelSA") || strings.Count(strings.Join(calls, "\n"), "AddSA") != 2 {
			t.Fatalf("an SA deleted or added again: %q", calls)
		}
	}
	if nsas != 2 || len(pols) != 2 {
		t.Fatalf("%d SAs, %d policies", nsas, len(pols))
	}
	h.eng.mu.Lock()
	out, in := h.eng.pols[polIDOf(t, polOut)], h.eng.pols[polIDOf(t, polIn)]
	h.eng.mu.Unlock()
	if out.TmplSrc != mustAddr("192.0.2.1") || out.TmplDst != mustAddr("203.0.113.9") || in.TmplSrc != mustAddr("203.0.113.9") || in.TmplDst != mustAddr("192.0.2.1") {
		t.Fatalf("templates after migrate: out %s -> %s, in %s -> %s", out.TmplSrc, out.TmplDst, in.TmplSrc, in.TmplDst)
	}
	if r := pols[polIDOf(t, polOut)]; r != 1 {
		t.Fatalf("out policy references %d, want 1", r)
	}

	// counters go to the kernel's SA at its new destination
	moved := saOut
	moved.dst, moved.encap = "203.0.113.9", encap
	h.smu.Lock()
	h.stats[saIDOf(moved)] = dataplane.SACounters{Bytes: 900, Packets: 9, SeqUsed: 10, LastUse: time.Unix(1700000100, 0)}
	h.smu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	var ae []Message
	for time.Now().Before(deadline) {
		if ae = conn.requests(nl.XFRM_MSG_NEWAE); len(ae) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(ae) == 0 {
		t.Fatal("no NEWAE after the migrate")
	}
	checkAE(t, ae[len(ae)-1].Data, moved, 900, 9, 9)
	if dst := netip.AddrFrom4([4]byte(ae[len(ae)-1].Data[:4])); dst != mustAddr("203.0.113.9") {
		t.Fatalf("NEWAE to the SA at %s, not at its new address", dst)
	}

	// the kernel's view after the migrate, dumped: nothing to change
	movedIn := saIn
	movedIn.src, movedIn.encap = "203.0.113.9", encap
	newOut, newIn := polOut, polIn
	newOut.tmpls = []nl.XfrmUserTmpl{tmpl("192.0.2.1", "203.0.113.9", 7, xfrmModeTunnel, 50)}
	newIn.tmpls = []nl.XfrmUserTmpl{tmpl("203.0.113.9", "192.0.2.1", 7, xfrmModeTunnel, 50)}
	conn.mu.Lock()
	conn.sas = [][]byte{movedIn.msg(), moved.msg()}
	conn.pols = [][]byte{newOut.msg(), newIn.msg()}
	conn.mu.Unlock()
	n := len(calls)
	h.send(ErrOverrun)
	calls, nsas, _ = h.eng.snapshot()
	if after := calls[n:]; len(after) != 0 || nsas != 2 {
		t.Fatalf("the dump after the migrate changed the engine: %q", after)
	}
}

// TestMirrorMigrateUnknown: a migrate of SAs and policies the mirror does
// not hold, or that it cannot read, changes nothing and is no panic.
func TestMirrorMigrateUnknown(t *testing.T) {
	conn := newFakeConn()
	conn.sas = [][]byte{saOut.msg()}
	h := start(t, conn)
	other := mvOut
	other.Reqid = 99
	h.send(nil, Message{nl.XFRM_MSG_MIGRATE, migrateNote(polOut, nil, 0, false, other)},
		Message{nl.XFRM_MSG_MIGRATE, migrateNote(polOut, nil, 0, false)},
		Message{nl.XFRM_MSG_MIGRATE, []byte{1, 2, 3}})
	calls, nsas, _ := h.eng.snapshot()
	for _, c := range calls {
		if strings.HasPrefix(c, "UpdateSA") || strings.HasPrefix(c, "DelSA") {
			t.Fatalf("calls %q", calls)
		}
	}
	if nsas != 1 || !strings.Contains(h.logs.String(), "unreadable migrate") {
		t.Fatalf("%d SAs; log:\n%s", nsas, h.logs.String())
	}
}
