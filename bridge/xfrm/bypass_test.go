package xfrm

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink/nl"
)

// TestMirrorBypassFallback: a daemon's IPsec policy gets a bypass pair of
// its own (one priority better, marks 0/0x1 and 0x1/0x1) only while the
// global pairs are not in — after a flush whose reinstall failed — and
// loses it once they are back (the next dump): a pair of its own would
// make the kernel migrate swanpathd's pair instead of the daemon's policy.
func TestMirrorBypassFallback(t *testing.T) {
	conn := newFakeConn()
	h := start(t, conn)
	broken := true
	conn.mu.Lock()
	conn.doErr = func(typ uint16, data []byte) error {
		if typ != nl.XFRM_MSG_UPDPOLICY || !broken {
			return nil
		}
		p, err := parsePolicy(data)
		if err == nil && isGlobal(bypassKey{sel: p.info.Sel, dir: p.info.Dir, mark: p.mark}) {
			return errors.New("no room")
		}
		return nil
	}
	conn.mu.Unlock()
	h.send(nil, Message{nl.XFRM_MSG_FLUSHPOLICY, nil})
	adds := len(conn.requests(nl.XFRM_MSG_UPDPOLICY))
	h.send(nil, Message{nl.XFRM_MSG_NEWPOLICY, polOut.msg()})
	pair := conn.requests(nl.XFRM_MSG_UPDPOLICY)[adds:]
	if len(pair) != 2 {
		t.Fatalf("%d bypass policies for the daemon's policy without the global pairs, want its pair", len(pair))
	}
	for i, r := range pair {
		p, err := parsePolicy(r.Data)
		if err != nil || !isBypass(p) || p.info.Priority != 999 || p.info.Sel != polOut.sel() || p.info.Dir != xfrmDirOut || p.mark != uint32(i) {
			t.Fatalf("bypass policy %+v mark %d: %v", p.info, p.mark, err)
		}
	}
	// the global pairs come back with the next dump; the pair goes
	conn.mu.Lock()
	broken = false
	conn.pols = [][]byte{polOut.msg()}
	conn.mu.Unlock()
	dels := len(conn.requests(nl.XFRM_MSG_DELPOLICY))
	adds = len(conn.requests(nl.XFRM_MSG_UPDPOLICY))
	h.send(ErrOverrun)
	if back := conn.requests(nl.XFRM_MSG_UPDPOLICY)[adds:]; len(back) != 12 {
		t.Fatalf("%d bypass policies installed with the dump, want the 12 global pairs back", len(back))
	}
	if gone := conn.requests(nl.XFRM_MSG_DELPOLICY)[dels:]; len(gone) != 2 {
		t.Fatalf("%d bypass policies removed once the global pairs were back, want the pair", len(gone))
	}
}
