package xfrm

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/dataplane"
)

// TestMirrorMovedByDeleteAndAdd: charon's kernel-netlink moves an SA by
// deleting it and adding it again with the replay state swanpathd last
// wrote back (behind the fast path): the outbound SA added again starts
// above what the fast path sent on it, not at the kernel's oseq; an SA
// of another reqid with that SPI, and inbound SAs, are left as they come.
func TestMirrorMovedByDeleteAndAdd(t *testing.T) {
	conn := newFakeConn()
	conn.sas = [][]byte{saIn.msg(), saOut.msg()}
	h := start(t, conn)
	h.smu.Lock()
	h.stats[saIDOf(saOut)] = dataplane.SACounters{Packets: 4999, SeqUsed: 5000}
	h.smu.Unlock()

	moved := saOut
	moved.dst, moved.oseq = "203.0.113.9", 100 // the kernel's oseq, last written back
	h.send(nil, Message{nl.XFRM_MSG_DELSA, saOut.delMsg()}, Message{nl.XFRM_MSG_NEWSA, moved.msg()})
	h.eng.mu.Lock()
	got := h.eng.sas[saIDOf(moved)]
	h.eng.mu.Unlock()
	if want := uint64(5000 + carryMargin); got.SeqStart != want {
		t.Fatalf("the outbound SA added again starts at %d, want %d (above the fast path's 5000)", got.SeqStart, want)
	}
	if !strings.Contains(h.logs.String(), "SA added again after its deletion") {
		t.Errorf("no log line:\n%s", h.logs.String())
	}

	// once only, and only for the same reqid
	h.smu.Lock()
	h.stats[saIDOf(moved)] = dataplane.SACounters{SeqUsed: 7000}
	h.smu.Unlock()
	other := moved
	other.dst, other.reqid = "203.0.113.10", 8
	h.send(nil, Message{nl.XFRM_MSG_DELSA, moved.delMsg()}, Message{nl.XFRM_MSG_NEWSA, other.msg()})
	h.eng.mu.Lock()
	got = h.eng.sas[saIDOf(other)]
	h.eng.mu.Unlock()
	if got.SeqStart != 101 {
		t.Fatalf("an SA of another reqid starts at %d, want the kernel's 101", got.SeqStart)
	}

	// inbound SAs start where the kernel's copy says
	movedIn := saIn
	movedIn.src, movedIn.seq = "203.0.113.9", 40
	h.send(nil, Message{nl.XFRM_MSG_DELSA, saIn.delMsg()}, Message{nl.XFRM_MSG_NEWSA, movedIn.msg()})
	h.eng.mu.Lock()
	got = h.eng.sas[saIDOf(movedIn)]
	h.eng.mu.Unlock()
	if got.SeqStart != 40 {
		t.Fatalf("inbound SA added again starts at %d, want 40", got.SeqStart)
	}
}
