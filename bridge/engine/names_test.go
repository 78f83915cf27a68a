package engine

import (
	"context"
	"testing"
)

// SAs are named by SPI and direction, policies by reqid (the newest
// CHILD_SA of it); a listing replaces the last one, and VICI going away
// forgets every name.
func TestNames(t *testing.T) {
	ctx := context.Background()
	e, _ := newEngine()
	in, out := inSA(0xc0000001, 1), outSA(0x100, 1)
	must(t, e.AddSA(ctx, in))
	must(t, e.AddSA(ctx, out))
	old := Child{Names: Names{Conn: "s2s", Child: "net", ChildID: 4, IKEID: 1}, Reqid: 1, SPIIn: 0xc0000009, SPIOut: 0x99}
	cur := Child{Names: Names{Conn: "s2s", Child: "net", ChildID: 5, IKEID: 1, Remote: "192.0.2.2"}, Reqid: 1,
		SPIIn: 0xc0000001, SPIOut: 0x100}
	e.SetChildren(true, []Child{cur, old})
	for _, sa := range []*SA{{SA: *in}, {SA: *out}} {
		n, ok := e.NamesOfSA(&sa.SA)
		if !ok || n != cur.Names {
			t.Errorf("SA 0x%x: %+v %v, want %+v", sa.SPI, n, ok, cur.Names)
		}
	}
	// the same SPI the other way is another SA
	wrong := *out
	wrong.Inbound = true
	if n, ok := e.NamesOfSA(&wrong); ok {
		t.Errorf("an inbound SA named by an outbound SPI: %+v", n)
	}
	if n, ok := e.NamesOfReqid(1); !ok || n.ChildID != 5 {
		t.Errorf("reqid 1: %+v %v, want the newest CHILD_SA {5}", n, ok)
	}
	e.SetChildren(false, nil)
	if _, ok := e.NamesOfSA(in); ok {
		t.Error("names kept after VICI went away")
	}
	if _, known := e.Children(); known {
		t.Error("VICI still known")
	}
}
