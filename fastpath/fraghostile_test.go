package fastpath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// hostileFragCases sends fragments built to hurt the reassembly tables
// (dp_frag.c), in the child process of TestFastpathRoundTrip (issue 17:
// hostile fragments are dropped and counted). IPv6 comes from the wire;
// IPv4 from the TAP, as the kernel reassembles IPv4 for the af_packet
// port before the fast path sees it (see afpFrame). Each case checks the
// counter of its reason, that drop_frag counts the same fragments, and
// that nothing else was dropped as a fragment:
//   - overlapping pieces, whose lengths exceed the whole (frag_overlap),
//     or add up to it around a hole (the library chains some pieces
//     before it finds the hole);
//   - a datagram of more than 8 pieces (frag_too_many);
//   - pieces of a datagram that never completes (frag_timeout);
//   - a piece ending beyond 65,535 bytes, IPv6 and IPv4 (frag_oversize);
//   - no data, a non-last piece not a multiple of 8 bytes, a fragment
//     header behind a destination options header (frag_bad);
//   - an IPv6 atomic fragment is no hostile one: taken whole at once;
//   - a flood of 320 datagrams that never complete, more than a table
//     holds: the oldest are evicted (frag_evicted), a datagram sent after
//     the flood is reassembled, every flood fragment is counted once;
//
// and then that every mbuf came back.
func hostileFragCases(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) {
	e, _ := newFamEnv(t, fp, wire, vb, portMAC)
	settle(wire)
	avail0 := fp.MbufsAvailable()
	tapUp(t, "tpa", netip.PrefixFrom(gwAddr, 24), peerAddr, vb.HardwareAddr)
	tap := openRaw(t, ifIndex(t, "tpa"))
	defer syscall.Close(tap)
	sendTap := func(ip []byte) {
		t.Helper()
		if err := syscall.Sendto(tap, frame(vb.HardwareAddr, portMAC, ip), 0, &syscall.SockaddrLinklayer{Ifindex: ifIndex(t, "tpa")}); err != nil {
			t.Fatal(err)
		}
	}
	send6 := func(ip []byte) { e.send(frame6(portMAC, vb.HardwareAddr, ip)) }
	id := uint32(0x5a000000)
	next := func() uint32 { id++; return id }

	// expect: after send, counter why grows by n and drop_frag by n;
	// no other reason moves
	expect := func(what, why string, n uint64, send func()) {
		t.Helper()
		before := e.counters()
		send()
		deadline := time.Now().Add(6 * time.Second) // the timeout case waits 2 s and a reap
		for e.counters()[why] < before[why]+n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // let a wrong extra count show
		now := e.counters()
		for _, c := range fragDropReasons {
			want := before[c]
			if c == why {
				want += n
			}
			if now[c] != want {
				t.Fatalf("%s: %s %d -> %d, want %d (before %v after %v)", what, c, before[c], now[c], want, before, now)
			}
		}
		if now["drop_frag"] != before["drop_frag"]+n {
			t.Fatalf("%s: drop_frag %d -> %d, want +%d", what, before["drop_frag"], now["drop_frag"], n)
		}
	}
	data := func(n int) []byte { return make([]byte, n) }

	expect("overlap beyond the whole (IPv6)", "frag_overlap", 3, func() {
		i := next()
		send6(piece6(h16, h26, i, 0, true, data(1448)))
		send6(piece6(h16, h26, i, 1440, true, data(1440)))
		send6(piece6(h16, h26, i, 2880, false, data(120)))
	})
	expect("overlap around a hole (IPv6)", "frag_overlap", 4, func() {
		// 16 + 8 + 8 + 8 = 40, the length the last piece gives; the
		// library chains [24,32) to the last, then finds no piece ending
		// at 24
		i := next()
		send6(piece6(h16, h26, i, 0, true, data(16)))
		send6(piece6(h16, h26, i, 8, true, data(8)))
		send6(piece6(h16, h26, i, 24, true, data(8)))
		send6(piece6(h16, h26, i, 32, false, data(8)))
	})
	expect("overlap (IPv4 from the TAP)", "frag_overlap", 3, func() {
		i := uint16(next())
		sendTap(piece4(gwAddr, h2, i, 0, true, data(1480)))
		sendTap(piece4(gwAddr, h2, i, 1472, true, data(1480)))
		sendTap(piece4(gwAddr, h2, i, 2952, false, data(48)))
	})
	expect("more than 8 pieces", "frag_too_many", 8, func() {
		// the first and 7 between: the table keeps 6 between
		i := next()
		for k := range 8 {
			send6(piece6(h16, h26, i, 8*k, true, data(8)))
		}
	})
	expect("never completed", "frag_timeout", 2, func() {
		i := next()
		send6(piece6(h16, h26, i, 1448, true, data(1448)))
		send6(piece6(h16, h26, i, 0, true, data(1448)))
	})
	expect("beyond 65,535 bytes (IPv6)", "frag_oversize", 1, func() {
		send6(piece6(h16, h26, next(), 65528, false, data(16)))
	})
	expect("beyond 65,535 bytes (IPv4 from the TAP)", "frag_oversize", 1, func() {
		sendTap(piece4(gwAddr, h2, uint16(next()), 65480, false, data(48)))
	})
	expect("malformed", "frag_bad", 4, func() {
		send6(piece6(h16, h26, next(), 0, true, nil))      // no data
		send6(piece6(h16, h26, next(), 0, true, data(13))) // not a multiple of 8, more follow
		sendTap(piece4(gwAddr, h2, uint16(next()), 8, true, nil))
		// a fragment header behind destination options
		p := piece6(h16, h26, next(), 0, true, data(16))
		opts := []byte{44, 0, 1, 4, 0, 0, 0, 0} // next: fragment; PadN
		p = append(append(p[:40:40], opts...), p[40:]...)
		p[6] = 60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		send6(p)
	})

	// an IPv6 atomic fragment (offset 0, no more) is a whole packet
	// (RFC 6946): taken at once, nothing dropped
	{
		before := e.counters()
		send6(piece6(h16, h26, next(), 0, false, ipv6udp(h16, h26, 1000, 2001, 64, data(64))[40:]))
		e.wait("frag_in", before["frag_in"]+1)
		if now := e.counters(); now["drop_frag"] != before["drop_frag"] || now["drop_malformed"] != before["drop_malformed"] {
			t.Fatalf("atomic fragment: before %v after %v", before, now)
		}
	}

	// The flood: 320 first pieces of datagrams that never complete, in
	// groups of a burst, each group in before the next (so that the
	// af_packet ring drops none). A table holds 128: without early
	// eviction the library would refuse every new datagram for 2 s.
	{
		before := e.counters()
		const flood = 320
		for g := 0; g < flood; g += 32 {
			rx := e.counters()["rx"]
			for range 32 {
				send6(piece6(h16, h26, next(), 0, true, data(1448)))
			}
			e.wait("rx", rx+32)
		}
		// a datagram sent now, while the table is full of the flood's, is
		// whole again
		mid := e.counters()
		i := next()
		send6(piece6(h16, h26, i, 2896, false, data(104)))
		send6(piece6(h16, h26, i, 0, true, data(1448)))
		send6(piece6(h16, h26, i, 1448, true, data(1448)))
		e.wait("frag_in", mid["frag_in"]+1)
		if now := e.counters(); now["frag_evicted"] == before["frag_evicted"] {
			t.Fatalf("%d datagrams pending, none evicted: %v", flood, now)
		}
		// every flood fragment is counted once, by one reason
		var got uint64
		deadline := time.Now().Add(6 * time.Second)
		for ; time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			now := e.counters()
			got = 0
			for _, c := range []string{"frag_evicted", "frag_timeout", "frag_table_full"} {
				got += now[c] - before[c]
			}
			if got >= flood {
				break
			}
		}
		now := e.counters()
		if got != flood || now["drop_frag"]-before["drop_frag"] != flood {
			t.Fatalf("flood of %d fragments: %d counted by reason, drop_frag +%d (before %v after %v)",
				flood, got, now["drop_frag"]-before["drop_frag"], before, now)
		}
		t.Logf("flood of %d: evicted %d, timed out %d, table full %d", flood, now["frag_evicted"]-before["frag_evicted"],
			now["frag_timeout"]-before["frag_timeout"], now["frag_table_full"]-before["frag_table_full"])
	}

	for deadline := time.Now().Add(3 * time.Second); fp.MbufsAvailable() < avail0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the hostile fragments, %d mbufs free, %d before: leak", fp.MbufsAvailable(), avail0)
		}
	}
}

// fragDropReasons are the counters of why a fragment was dropped (each
// also counted in drop_frag).
var fragDropReasons = []string{"frag_bad", "frag_oversize", "frag_overlap", "frag_too_many", "frag_timeout",
	"frag_evicted", "frag_table_full"}

// piece6 is one IPv6 fragment (UDP) from src to dst of datagram id: data
// at byte offset ofs, more pieces after it or not.
func piece6(src, dst netip.Addr, id uint32, ofs int, more bool, data []byte) []byte {
	p := make([]byte, 48, 48+len(data))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(data)))
	p[6], p[7] = 44, 64
	copy(p[8:], src.AsSlice())
	copy(p[24:], dst.AsSlice())
	p[40] = 17
	fo := uint16(ofs/8) << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(p[42:], fo)
	binary.BigEndian.PutUint32(p[44:], id)
	return append(p, data...)
}

// piece4 is one IPv4 fragment (UDP), as piece6.
func piece4(src, dst netip.Addr, id uint16, ofs int, more bool, data []byte) []byte {
	p := make([]byte, 20, 20+len(data))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(20+len(data)))
	binary.BigEndian.PutUint16(p[4:], id)
	fo := uint16(ofs / 8)
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(p[6:], fo)
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], csum(p[:20]))
	return append(p, data...)
}
