package fastpath

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// The fast path is tested in one process with one port: a veth end taken
// by net_af_packet, the other end driven by the test through a raw socket.
// A plaintext frame sent in comes back encrypted; fed back in, it comes
// back decrypted (the inbound SA has the same SPI and key as the outbound
// one). EAL can start once per process, so the test re-runs its own binary
// inside a fresh network namespace and checks everything there.

const childEnv = "SWANPATH_FASTPATH_CHILD"

func TestFastpathRoundTrip(t *testing.T) {
	runChild(t, "fpt", "TestFastpathChild", childEnv, "", true)
}

// inChild says whether this process is one of the child tests below.
func inChild() bool {
	return os.Getenv(childEnv) != "" || os.Getenv(workersEnv) != "" || os.Getenv(lookasideEnv) != ""
}

// runChild runs the test child in this test binary, in a fresh network
// namespace (named prefix + random hex, which is also the child's EAL
// --file-prefix), with env set to that name (then "," and extra if
// given) and, with veth, the veth pair va/vb up in it. EAL starts once per
// process, hence a process per child. It fails t unless the child passes
// and its Close removed EAL's runtime directory.
func runChild(t *testing.T, prefix, child, env, extra string, veth bool) {
	t.Helper()
	if inChild() {
		t.Skip("runs in the parent only")
	}
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root (network namespace), DPDK and hugepages")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	ns := prefix + hex.EncodeToString(b[:])
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	// EAL's runtime directory (--file-prefix ns): Close removes it; this
	// is for a child that did not get that far
	t.Cleanup(func() { _ = os.RemoveAll(ealRunDir(ns)) })
	if veth {
		run("-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
		for _, l := range []string{"va", "vb", "lo"} {
			run("-n", ns, "link", "set", l, "up")
		}
	}
	val := ns
	if extra != "" {
		val += "," + extra
	}
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^"+child+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), env+"="+val)
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+child)) {
		t.Fatalf("child test %s failed: %v", child, err)
	}
	checkRunDirGone(t, ns)
}

// childArg is the value runChild set in env for this child test (its
// namespace, which is also its EAL --file-prefix, then "," and any
// extra); run other than by runChild from parent, the test is skipped.
func childArg(t *testing.T, env, parent string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		t.Skip("run by " + parent)
	}
	return v
}

// childEAL is a child test's EAL arguments: lcores (such as "-l", "0,1"),
// then its own --file-prefix ns, in memory, EAL's log quiet.
func childEAL(ns string, lcores ...string) []string {
	return append(lcores, "--file-prefix", ns, "--in-memory", "-m", "256", "--log-level", "lib.eal:error")
}

// ealRunDir is where EAL keeps its runtime files (the telemetry socket)
// for a --file-prefix when run as root.
func ealRunDir(prefix string) string { return filepath.Join("/var/run/dpdk", prefix) }

// checkRunDirGone fails the test if a child's Close left EAL's runtime
// directory behind.
func checkRunDirGone(t *testing.T, prefix string) {
	t.Helper()
	if _, err := os.Stat(ealRunDir(prefix)); !errors.Is(err, fs.ErrNotExist) {
		ents, _ := os.ReadDir(ealRunDir(prefix))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("after Close, EAL's runtime directory %s is still there (%v; holding %v)", ealRunDir(prefix), err, names)
	}
}

var (
	gwAddr   = netip.MustParseAddr("192.0.2.1")
	peerAddr = netip.MustParseAddr("192.0.2.2")
	h1       = netip.MustParseAddr("10.1.0.10")
	h2       = netip.MustParseAddr("10.2.0.10")
)

func TestFastpathChild(t *testing.T) {
	ns := childArg(t, childEnv, "TestFastpathRoundTrip")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fp, err := Open(Config{
		EALArgs:   childEAL(ns, "-l", "0,1"),
		Ports:     []PortConfig{{Name: "a", Device: "net_af_packet0,iface=va", Tap: "tpa"}},
		IdleSleep: 10 * time.Microsecond,
		MaxSAs:    256,
		Log:       log,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	fp.SetClosed(false) // no charon here: forward by the policies the test installs
	threadsOffWorkers(t, fp)

	vb, err := net.InterfaceByName("vb")
	if err != nil {
		t.Fatal(err)
	}
	wire := openRaw(t, vb.Index)
	defer syscall.Close(wire)
	portMAC := fp.Ports()[0].MAC

	key := make(model.Key, 20)
	_, _ = rand.Read(key)
	mk := func(inbound bool) *model.SA {
		sa := &model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x1001, Proto: model.ProtoESP}, Src: gwAddr,
			Reqid: 1, Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, EncKey: append(model.Key(nil), key...),
			Encap: true, SrcPort: 4500, DstPort: 4500, ReplayWindow: 32, Inbound: inbound}
		if inbound {
			sa.Dst, sa.Src = gwAddr, peerAddr
		}
		return sa
	}
	out, in := mk(false), mk(true)
	outID, inID := out.SAID, in.SAID
	for _, sa := range []*model.SA{out, in} {
		if err := fp.AddSA(sa); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sa.EncKey, make([]byte, 20)) {
			t.Fatal("AddSA left the key in Go memory")
		}
	}
	sel := model.Selector{Src: netip.MustParsePrefix("10.1.0.0/24"), Dst: netip.MustParsePrefix("10.2.0.0/24")}
	pol := func(d model.Dir) *model.Policy {
		return &model.Policy{PolicyID: model.PolicyID{Sel: sel, Dir: d}, Reqid: 1, Mode: model.ModeTunnel}
	}
	if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol(model.DirOut), SA: outID, HasSA: true}, {Policy: pol(model.DirFwd)}}); err != nil {
		t.Fatal(err)
	}
	fib := dataplane.FIB{
		Routes: []dataplane.Route{
			{Dst: netip.MustParsePrefix("192.0.2.0/24"), Port: 0},
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Port: 0, Gateway: peerAddr},
			{Dst: netip.PrefixFrom(gwAddr, 32), Local: true},
		},
		Neighs: []dataplane.Neigh{{Port: 0, IP: peerAddr, MAC: vb.HardwareAddr}},
		// one fast path plays both gateways: what it encrypts to the
		// peer comes back to it as if it were the peer
		Addrs: []netip.Addr{gwAddr, peerAddr},
	}
	if err := fp.SetFIB(fib); err != nil {
		t.Fatal(err)
	}
	settle(wire)
	avail0 := fp.MbufsAvailable()

	// each numbered step runs as a subtest, so that a failing one does
	// not hide the rest; the helpers below fail the step that calls them
	cur := t
	step := func(name string, f func(t *testing.T)) {
		t.Run(name, func(st *testing.T) {
			cur = st
			defer func() { cur = t }()
			f(st)
		})
	}
	plain := func(i int) []byte {
		return frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, []byte(fmt.Sprintf("hello-%d", i))))
	}
	send := func(f []byte) {
		cur.Helper()
		if err := syscall.Sendto(wire, f, 0, &syscall.SockaddrLinklayer{Ifindex: vb.Index}); err != nil {
			cur.Fatal(err)
		}
	}
	// wait for the first frame that match accepts
	recv := func(what string, match func(ip []byte) bool) []byte {
		cur.Helper()
		f, err := recvMatch(wire, 3*time.Second, match)
		if err != nil {
			cur.Fatalf("%s: %v (counters %v)", what, err, fp.PortStats()[0].Counters)
		}
		return f
	}
	isESP := func(ip []byte) bool {
		return ip[9] == 17 && binary.BigEndian.Uint16(ip[22:]) == 4500 && binary.BigEndian.Uint32(ip[28:]) == 0x1001
	}
	isPlain := func(payload string) func([]byte) bool {
		return func(ip []byte) bool {
			return ip[9] == 17 && bytes.Equal(ip[12:16], h1.AsSlice()) && bytes.HasSuffix(ip, []byte(payload))
		}
	}

	// what the steps share: the first ESP frame, turned around by back as
	// if the peer sent it; the port counters before step 3
	back := func(f []byte) []byte {
		g := append([]byte(nil), f...)
		copy(g[0:6], portMAC)
		copy(g[6:12], vb.HardwareAddr)
		return g
	}
	var esp1 []byte
	var before map[string]uint64
	// a next hop without neighbour reported for resolution (steps 7, 7b)
	waitMiss := func() {
		cur.Helper()
		var miss []dataplane.Note
		for deadline := time.Now().Add(2 * time.Second); len(miss) == 0 && time.Now().Before(deadline); {
			miss = fp.Notes()
		}
		if len(miss) == 0 || miss[0].Kind != dataplane.NoteNoNeighbour || miss[0].Dst != peerAddr {
			cur.Fatalf("neighbour miss for %s not reported: %v", peerAddr, miss)
		}
	}

	step("1 outbound plaintext in ESP-in-UDP out", func(t *testing.T) {
		// 1. outbound: plaintext in, ESP-in-UDP out, nothing of the plaintext visible
		send(plain(1))
		esp1 = recv("encrypted frame", isESP)
		ip := esp1[14:]
		if !bytes.Equal(ip[12:16], gwAddr.AsSlice()) || !bytes.Equal(ip[16:20], peerAddr.AsSlice()) {
			t.Fatalf("outer addresses %v -> %v", ip[12:16], ip[16:20])
		}
		if bytes.Contains(esp1, []byte("hello-1")) {
			t.Fatal("plaintext visible in the ESP frame")
		}
		if csum(ip[:20]) != 0 {
			t.Fatal("outer IPv4 checksum is wrong")
		}
		if seq := binary.BigEndian.Uint32(ip[32:]); seq != 1 {
			t.Fatalf("first ESP sequence number %d, want 1", seq)
		}
	})

	step("1b too big once encrypted DF set -> ICMP", func(t *testing.T) {
		// 1b. too big once encrypted: DF set -> ICMP "fragmentation needed"
		// with the largest inner size that fits; DF clear -> encrypted, the
		// ESP packet in two fragments (frag_test.go decrypts such ones)
		big := ipv4udp(h1, h2, 1000, 2000, 64, make([]byte, 1500-28))
		big[6] = 0x40 // DF
		binary.BigEndian.PutUint16(big[10:], 0)
		binary.BigEndian.PutUint16(big[10:], csum(big[:20]))
		send(frame(portMAC, vb.HardwareAddr, big))
		icmp := recv("ICMP fragmentation needed", func(ip []byte) bool {
			return ip[9] == 1 && ip[20] == 3 && ip[21] == 4
		})[14:]
		// 1500 - (20 IP + 8 UDP + 8 ESP + 8 IV + 16 ICV) = 1440, minus the
		// 2-byte trailer: 1438
		if mtu := binary.BigEndian.Uint16(icmp[26:]); mtu != 1438 {
			t.Fatalf("ICMP next-hop MTU %d, want 1438", mtu)
		}
		if !bytes.Equal(icmp[16:20], h1.AsSlice()) || !bytes.Equal(icmp[12:16], gwAddr.AsSlice()) || csum(icmp[20:]) != 0 {
			t.Fatalf("bad ICMP: % x", icmp[:48])
		}
		before0 := fp.PortStats()[0].Counters
		send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, make([]byte, 1500-28))))
		recv("second fragment of the ESP of a 1500-byte packet", func(ip []byte) bool {
			return ip[9] == 17 && bytes.Equal(ip[12:16], gwAddr.AsSlice()) &&
				binary.BigEndian.Uint16(ip[6:])&0x1fff == 1480/8 && csum(ip[:20]) == 0
		})
		waitCounter(t, fp, "frag_out", before0["frag_out"]+2)
		if now := fp.PortStats()[0].Counters; now["drop_mtu"] != before0["drop_mtu"] {
			t.Fatalf("a DF-clear packet too big once encrypted was dropped: drop_mtu %d -> %d", before0["drop_mtu"], now["drop_mtu"])
		}
	})

	step("2 inbound the ESP frame back in the", func(t *testing.T) {
		// 2. inbound: the ESP frame back in, the plaintext forwarded out
		send(back(esp1))
		dec := recv("decrypted frame", isPlain("hello-1"))
		if ttl := dec[14+8]; ttl != 62 {
			t.Fatalf("TTL %d after two forwarding hops, want 62", ttl)
		}
	})

	step("2b the ESP came back from 192.0.2.14500 not", func(t *testing.T) {
		// 2b. the ESP came back from 192.0.2.1:4500, not from the SA's peer
		// 192.0.2.2:4500: once authenticated, that is a NAT mapping change
		var notes []dataplane.Note
		for deadline := time.Now().Add(2 * time.Second); len(notes) == 0 && time.Now().Before(deadline); {
			notes = fp.Notes()
		}
		if len(notes) == 0 || notes[0].Kind != dataplane.NoteMapping || notes[0].SPI != 0x1001 ||
			notes[0].Src != gwAddr || notes[0].SrcPort != 4500 {
			t.Fatalf("mapping change not noted: %+v", notes)
		}
	})

	step("2c update_sa", func(t *testing.T) {
		// 2c. update_sa (NAT remapped): the SA moves to port 31000 and
		// continues its sequence numbers, with the keys it had
		send(plain(5))
		seqBefore := binary.BigEndian.Uint32(recv("ESP before the move", isESP)[14+32:])
		if err := fp.MoveSA(outID, gwAddr, peerAddr, 4500, 31000, true); err != nil {
			t.Fatal(err)
		}
		send(plain(6))
		moved := recv("ESP after the move", func(ip []byte) bool {
			return ip[9] == 17 && binary.BigEndian.Uint16(ip[22:]) == 31000 && binary.BigEndian.Uint32(ip[28:]) == 0x1001
		})
		if seq := binary.BigEndian.Uint32(moved[14+32:]); seq != seqBefore+1 {
			t.Fatalf("sequence after the move %d, want %d", seq, seqBefore+1)
		}
		// same key: the inbound SA still decrypts it (sent to our port 4500)
		in2 := back(moved)
		binary.BigEndian.PutUint16(in2[14+22:], 4500)
		send(in2)
		recv("moved ESP decrypted", isPlain("hello-6"))
		if err := fp.MoveSA(outID, gwAddr, peerAddr, 4500, 4500, true); err != nil {
			t.Fatal(err)
		}
		drainNotes(fp)
	})

	step("3 replay of the same ESP dropped and counted", func(t *testing.T) {
		// 3. replay of the same ESP: dropped and counted
		before = fp.PortStats()[0].Counters
		send(back(esp1))
		waitCounter(t, fp, "drop_replay", before["drop_replay"]+1)
	})

	step("3b out of order inside the window all", func(t *testing.T) {
		// 3b. out of order inside the window: all accepted, then replays dropped
		var burst [][]byte
		for i := 10; i < 15; i++ {
			send(plain(i))
			burst = append(burst, back(recv("ESP for reordering", isESP)))
		}
		for i := len(burst) - 1; i >= 0; i-- {
			send(burst[i])
			recv("reordered ESP decrypted", isPlain(fmt.Sprintf("hello-%d", 10+i)))
		}
		send(burst[2])
		waitCounter(t, fp, "drop_replay", before["drop_replay"]+2)
	})

	step("4 corrupted ICV on a fresh sequence number", func(t *testing.T) {
		// 4. corrupted ICV on a fresh sequence number
		send(plain(2))
		esp2 := back(recv("second ESP frame", isESP))
		esp2[len(esp2)-1] ^= 0xff
		send(esp2)
		waitCounter(t, fp, "drop_auth", before["drop_auth"]+1)
	})

	step("5 unknown SPI", func(t *testing.T) {
		// 5. unknown SPI
		bad := back(esp1)
		binary.BigEndian.PutUint32(bad[14+28:], 0xdead)
		send(bad)
		waitCounter(t, fp, "drop_unknown_spi", before["drop_unknown_spi"]+1)
	})

	step("6 ESP-in-UDP whose UDP length lies", func(t *testing.T) {
		// 6. ESP-in-UDP whose UDP length lies
		bad := back(esp1)
		binary.BigEndian.PutUint16(bad[14+24:], 9)
		send(bad)
		waitCounter(t, fp, "drop_malformed", before["drop_malformed"]+1)
	})

	step("7 no neighbour reported for resolution held", func(t *testing.T) {
		// 7. no neighbour: reported for resolution, held for a moment (as the
		// kernel queues on an unresolved neighbour), then dropped and counted
		fib.Neighs = nil
		if err := fp.SetFIB(fib); err != nil {
			t.Fatal(err)
		}
		drainNotes(fp)
		send(plain(3))
		waitMiss()
		waitCounter(t, fp, "drop_no_neigh", before["drop_no_neigh"]+1)
	})

	step("7b the neighbour is published while the", func(t *testing.T) {
		// 7b. the neighbour is published while the packet is held (the mirror
		// resolved it): the packet goes out, nothing is dropped
		drainNotes(fp)
		settle(wire)
		d0 := fp.PortStats()[0].Counters["drop_no_neigh"]
		send(plain(7))
		waitMiss()
		fib.Neighs = []dataplane.Neigh{{Port: 0, IP: peerAddr, MAC: vb.HardwareAddr}}
		if err := fp.SetFIB(fib); err != nil {
			t.Fatal(err)
		}
		recv("the packet held for its neighbour, encrypted", isESP)
		if d := fp.PortStats()[0].Counters["drop_no_neigh"]; d != d0 {
			t.Fatalf("drop_no_neigh %d -> %d: the held packet was dropped", d0, d)
		}
	})

	step("8 SA counters 12 packets encrypted", func(t *testing.T) {
		// 8. SA counters: 12 packets encrypted (one of them fragmented, one
		// dropped after the neighbour lookup, one held for it), 7 decrypted;
		// auth and replay drops on the SA
		st, _ := fp.SAStats(outID)
		if st.Packets != 12 || st.LastUse.IsZero() || st.SeqUsed != 13 {
			t.Fatalf("outbound SA counters %+v, want 12 packets, next sequence number 13", st)
		}
		st, _ = fp.SAStats(inID)
		if st.Packets != 7 || st.DropAuth != 1 || st.DropReplay != 2 {
			t.Fatalf("inbound SA counters %+v, want 7 packets, 1 auth drop, 2 replay drops", st)
		}
	})

	step("8b hostile ESP that authenticates", func(t *testing.T) {
		// 8b. hostile ESP that authenticates (built with the SA's key): bad
		// padding, a pad length beyond the payload, a wrong next header.
		// First a well-formed one, so the builder is known to be right.
		// esp builds ESP-in-UDP for the inbound SA; badPad makes the pad
		// bytes wrong, padLen >= 0 overrides the pad length field.
		esp := func(seq uint32, badPad bool, padLen int, next byte) []byte {
			inner := ipv4udp(h1, h2, 1000, 2000, 64, []byte(fmt.Sprintf("hostile-%d", seq)))
			// RFC 4303 §2.4: pad bytes 1, 2, 3...; payload+trailer a multiple of 4
			pad := make([]byte, (4-(len(inner)+2)%4)%4+4)
			for i := range pad {
				pad[i] = byte(i + 1)
				if badPad {
					pad[i] = 0xaa
				}
			}
			pl := byte(len(pad))
			if padLen >= 0 {
				pl = byte(padLen)
			}
			pt := append(append(append([]byte(nil), inner...), pad...), pl, next)
			return frame(portMAC, vb.HardwareAddr, sealPayload(key, 0x1001, seq, pt))
		}
		fib.Neighs = []dataplane.Neigh{{Port: 0, IP: peerAddr, MAC: vb.HardwareAddr}}
		if err := fp.SetFIB(fib); err != nil {
			t.Fatal(err)
		}
		b0 := fp.PortStats()[0].Counters
		good := esp(1000, false, -1, 4)
		send(good)
		if _, err := recvMatch(wire, 3*time.Second, isPlain("hostile-1000")); err != nil {
			t.Fatalf("well-formed hand-built ESP not decrypted: % x\nbefore %v\nafter %v", good[:60], b0, fp.PortStats()[0].Counters)
		}
		stIn, _ := fp.SAStats(inID)
		before = fp.PortStats()[0].Counters
		send(esp(1001, true, -1, 4))   // pad bytes not 1, 2, 3...
		send(esp(1002, false, 200, 4)) // pad length beyond the payload
		send(esp(1003, false, -1, 59)) // next header "no next header" in tunnel mode
		// truncated: a valid frame cut by 5 bytes (IP and UDP lengths fixed)
		short := esp(1004, false, -1, 4)
		short = short[:len(short)-5]
		binary.BigEndian.PutUint16(short[14+2:], uint16(len(short)-14))
		binary.BigEndian.PutUint16(short[14+10:], 0)
		binary.BigEndian.PutUint16(short[14+10:], csum(short[14:34]))
		binary.BigEndian.PutUint16(short[14+24:], uint16(len(short)-34))
		send(short)
		waitCounter(t, fp, "drop_malformed", before["drop_malformed"]+4)
		if now := fp.PortStats()[0].Counters; now["drop_replay"] != before["drop_replay"] {
			t.Fatalf("malformed ESP counted as replay: %d -> %d", before["drop_replay"], now["drop_replay"])
		}
		if st, _ := fp.SAStats(inID); st.DropMalformed != stIn.DropMalformed+4 || st.Packets != stIn.Packets {
			t.Fatalf("inbound SA after hostile ESP: %+v (before %+v)", st, stIn)
		}
	})

	step("9 delete while published the SA is gone from", func(t *testing.T) {
		// 9. delete while published: the SA is gone from the loop
		if err := fp.DelSA(inID); err != nil {
			t.Fatal(err)
		}
		if err := fp.DelSA(inID); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		before = fp.PortStats()[0].Counters
		send(back(esp1))
		waitCounter(t, fp, "drop_unknown_spi", before["drop_unknown_spi"]+1)
	})

	step("9b ESP ahead of its SA held until the SA comes", func(t *testing.T) {
		// 9b. a rekey's responder sends on its new SA before the IKE
		// daemon here has installed it: the ESP is held (spi_held), and
		// decrypted once the SA is added, not dropped as unknown
		before = fp.PortStats()[0].Counters
		send(back(esp1))
		waitCounter(t, fp, "spi_held", before["spi_held"]+1)
		if err := fp.AddSA(mk(true)); err != nil {
			t.Fatal(err)
		}
		recv("held ESP decrypted once its SA came", isPlain("hello-1"))
		if now := fp.PortStats()[0].Counters; now["drop_unknown_spi"] != before["drop_unknown_spi"] {
			t.Fatalf("held ESP also dropped as unknown: drop_unknown_spi %d -> %d", before["drop_unknown_spi"], now["drop_unknown_spi"])
		}
		if err := fp.DelSA(inID); err != nil {
			t.Fatal(err)
		}
	})

	step("10 refused suites get a clear error", func(t *testing.T) {
		// 10. refused suites get a clear error
		des := mk(false)
		des.SPI, des.EncAlg, des.IntAlg = 0x2002, 3 /* 3DES */, model.IntegHMACSHA1_96
		if err := fp.AddSA(des); err == nil || !strings.Contains(err.Error(), "not supported") {
			t.Fatalf("3DES SA: %v", err)
		}
	})

	step("10b every suite swanpath carries encrypt", func(t *testing.T) {
		// 10b. every suite swanpath carries: encrypt, then decrypt what came out
		suites := []struct {
			name          string
			enc, integ    uint16
			keyLen, ikLen int
			esn           bool
		}{
			{"aes128gcm16", model.EncrAESGCM16, 0, 20, 0, false},
			{"aes192gcm16", model.EncrAESGCM16, 0, 28, 0, false},
			{"aes256gcm16", model.EncrAESGCM16, 0, 36, 0, false},
			{"aes128gcm8", model.EncrAESGCM8, 0, 20, 0, false},
			{"aes128gcm12", model.EncrAESGCM12, 0, 20, 0, false},
			{"aes128-sha1", model.EncrAESCBC, model.IntegHMACSHA1_96, 16, 20, false},
			{"aes128-sha256", model.EncrAESCBC, model.IntegHMACSHA256_128, 16, 32, false},
			{"aes256-sha256", model.EncrAESCBC, model.IntegHMACSHA256_128, 32, 32, false},
			{"aes256-sha384", model.EncrAESCBC, model.IntegHMACSHA384_192, 32, 48, false},
			{"aes256-sha512", model.EncrAESCBC, model.IntegHMACSHA512_256, 32, 64, false},
			{"aes128ctr-sha256", model.EncrAESCTR, model.IntegHMACSHA256_128, 20, 32, false},
			{"chacha20poly1305", model.EncrChaCha20Poly1305, 0, 36, 0, false},
			{"aes128gmac", model.EncrNullAESGMAC, 0, 20, 0, false},
			{"null-sha256", model.EncrNull, model.IntegHMACSHA256_128, 0, 32, false},
			{"aes128gcm16-esn", model.EncrAESGCM16, 0, 20, 0, true},
			{"aes128-sha256-esn", model.EncrAESCBC, model.IntegHMACSHA256_128, 16, 32, true},
			{"chacha20poly1305-esn", model.EncrChaCha20Poly1305, 0, 36, 0, true},
		}
		fib.Neighs = []dataplane.Neigh{{Port: 0, IP: peerAddr, MAC: vb.HardwareAddr}}
		if err := fp.SetFIB(fib); err != nil {
			t.Fatal(err)
		}
		// every suite both ways: synchronous CPU crypto where the PMD has it
		// (the default), lookaside through the device's queue pair, and
		// encrypted by the one, decrypted by the other
		for pass, mode := range []string{"cpu", "lookaside", "mixed"} {
			lookaside := mode == "lookaside"
			for i, su := range suites {
				spi := uint32(0x3000 + 0x100*pass + i)
				ek, ik := make(model.Key, su.keyLen), make(model.Key, su.ikLen)
				_, _ = rand.Read(ek)
				_, _ = rand.Read(ik)
				var ids [2]model.SAID
				for j, inbound := range []bool{false, true} {
					sa := mk(inbound)
					sa.SPI, sa.EncAlg, sa.IntAlg, sa.ESN = spi, su.enc, su.integ, su.esn
					sa.EncKey, sa.IntKey = append(model.Key(nil), ek...), append(model.Key(nil), ik...)
					fp.asyncCrypto = lookaside || mode == "mixed" && inbound
					if err := fp.AddSA(sa); err != nil {
						t.Fatalf("%s: %v", su.name, err)
					}
					ids[j] = sa.SAID
				}
				if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol(model.DirOut), SA: ids[0], HasSA: true}, {Policy: pol(model.DirFwd)}}); err != nil {
					t.Fatal(err)
				}
				msg := fmt.Sprintf("suite-%s", su.name)
				send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2000, 64, []byte(msg))))
				espF := recv(su.name+" encrypted", func(ip []byte) bool {
					return ip[9] == 17 && binary.BigEndian.Uint16(ip[22:]) == 4500 && binary.BigEndian.Uint32(ip[28:]) == spi
				})
				if su.enc != model.EncrNull && su.enc != model.EncrNullAESGMAC && bytes.Contains(espF, []byte(msg)) {
					t.Fatalf("%s: plaintext visible", su.name)
				}
				send(back(espF))
				recv(su.name+" decrypted", isPlain(msg))
				st, _ := fp.SAStats(ids[0])
				t.Logf("%-18s ok on %s (%s)", su.name, st.Crypto, mode)
				if lookaside && st.CryptoMode != "lookaside" || !lookaside && su.enc == model.EncrAESGCM16 && st.CryptoMode != "cpu" {
					t.Fatalf("%s: crypto mode %q (lookaside only: %v)", su.name, st.CryptoMode, lookaside)
				}
				for _, id := range ids {
					if err := fp.DelSA(id); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		fp.asyncCrypto = false
	})

	step("10b' replay window 0", func(t *testing.T) {
		// 10b'. replay window 0 (swanctl replay_window = 0): no anti-replay
		{
			var ids [2]model.SAID
			for j, inbound := range []bool{false, true} {
				sa := mk(inbound)
				sa.SPI, sa.ReplayWindow = 0x4000, 0
				sa.EncKey = append(model.Key(nil), key...)
				if err := fp.AddSA(sa); err != nil {
					t.Fatal(err)
				}
				ids[j] = sa.SAID
			}
			if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol(model.DirOut), SA: ids[0], HasSA: true}, {Policy: pol(model.DirFwd)}}); err != nil {
				t.Fatal(err)
			}
			send(plain(20))
			f := back(recv("ESP without replay window", func(ip []byte) bool {
				return ip[9] == 17 && binary.BigEndian.Uint32(ip[28:]) == 0x4000
			}))
			for range 2 {
				send(f)
				recv("the same ESP accepted again", isPlain("hello-20"))
			}
			for _, id := range ids {
				_ = fp.DelSA(id)
			}
		}
	})

	step("10c a policy without SA", func(t *testing.T) {
		// 10c. a policy without SA (a trap): dropped, and an acquire noted
		if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol(model.DirOut)}}); err != nil {
			t.Fatal(err)
		}
		before = fp.PortStats()[0].Counters
		drainNotes(fp)
		send(plain(4))
		waitCounter(t, fp, "drop_no_sa", before["drop_no_sa"]+1)
		var acq []dataplane.Note
		for deadline := time.Now().Add(2 * time.Second); len(acq) == 0 && time.Now().Before(deadline); {
			acq = fp.Notes()
		}
		if len(acq) != 1 || acq[0].Kind != dataplane.NoteAcquire || acq[0].Reqid != 1 || acq[0].Src != h1 || acq[0].Dst != h2 {
			t.Fatalf("acquire for reqid 1 %s -> %s not noted: %+v", h1, h2, acq)
		}
	})

	// the cases of their own files, each on the port as the steps left it
	for _, c := range []struct {
		name string
		run  func(*testing.T, *Fastpath, int, *net.Interface, net.HardwareAddr)
	}{
		{"10d IPv6 and transport mode (family_test.go)", familyCases},
		{"10e SPD matching (spd_test.go)", spdCases},
		{"10f hard lifetimes by bytes and packets (limits_test.go)", limitCases},
		{"10g the gate, bypasses, reverse path, ICMP limits (edge_test.go)", edgeCases},
		{"10h fragments (frag_test.go)", fragCases},
		{"10h2 hostile fragments (fraghostile_test.go)", hostileFragCases},
		{"10i start sequence numbers, replay window start, blocked SAs (seq_test.go)", seqCases},
	} {
		step(c.name, func(t *testing.T) { c.run(t, fp, wire, vb, portMAC) })
	}
	step("10j route changes (fib_test.go)", func(t *testing.T) { fibCases(t, fp, fib) })

	step("11 nothing leaked every mbuf is back in the", func(t *testing.T) {
		// 11. nothing leaked: every mbuf is back in the pool (once what is
		// held for a neighbour has been dropped)
		settle(wire)
		latencyCheck(t, fp)
		maxSAsCheck(t, fp, 256)
		for deadline := time.Now().Add(2 * time.Second); fp.MbufsAvailable() != avail0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if avail := fp.MbufsAvailable(); avail != avail0 {
			t.Fatalf("mbufs available %d, before the traffic %d: leak", avail, avail0)
		}
	})

	step("11b and a fragment held for reassembly when", func(t *testing.T) {
		// 11b. and a fragment held for reassembly when the loop stops
		fragStopCheck(t, fp, wire, vb, portMAC, avail0)
	})
}

// drainNotes reads notes until none come for a while (the loop may still
// be noting what earlier frames caused).
func drainNotes(fp *Fastpath) {
	for quiet := 0; quiet < 20; {
		if len(fp.Notes()) == 0 {
			quiet++
			time.Sleep(time.Millisecond)
		} else {
			quiet = 0
		}
	}
}

func waitCounter(t *testing.T, fp *Fastpath, name string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := fp.PortStats()[0].Counters[name]
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter %s = %d, want %d (all: %v)", name, got, want, fp.PortStats()[0].Counters)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openRaw opens an AF_PACKET socket on ifindex.
func openRaw(t *testing.T, ifindex int) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	tv := syscall.NsecToTimeval(int64(50 * time.Millisecond))
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	// The socket also queues a copy of every frame the test sends: with the
	// default receive buffer (~200 KiB) a burst of a few hundred frames
	// overflows it under load and the test, not the fast path, loses packets.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 16<<20); err != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v", err)
	}
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// settle drains what is queued on the socket (kernel chatter).
func settle(fd int) {
	buf := make([]byte, 2048)
	for {
		if _, _, err := syscall.Recvfrom(fd, buf, 0); err != nil {
			return
		}
	}
}

// recvMatch returns the first incoming IPv4 frame whose IP packet match accepts.
func recvMatch(fd int, timeout time.Duration, match func(ip []byte) bool) ([]byte, error) {
	return recvType(fd, timeout, 0x0800, match)
}

func frame(dst, src net.HardwareAddr, ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	copy(f[0:], dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	return append(f, ip...)
}

func ipv4udp(src, dst netip.Addr, sport, dport uint16, ttl byte, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = ttl
	p[9] = 17
	copy(p[12:], src.AsSlice())
	copy(p[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], csum(p[:20]))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// latencyCheck: every frame handed to a wire port is in the latency
// histogram once, each with the time since its own receive burst (a stale
// or missing stamp would put it seconds or hours away).
func latencyCheck(t *testing.T, fp *Fastpath) {
	t.Helper()
	var sent uint64
	for _, p := range fp.PortStats() {
		sent += p.Counters["tx"] + p.Counters["drop_tx"]
	}
	l := fp.Latency()
	if l.Frames() != sent || sent == 0 {
		t.Fatalf("latency histogram holds %d frames, the wire ports were handed %d", l.Frames(), sent)
	}
	// the slowest: frames held for a neighbour (at most SP_HOLD_MS)
	med, max := l.Quantile(0.5), l.Quantile(1)
	if med <= 0 || med > 100*time.Millisecond || max > time.Second {
		t.Fatalf("latency median %v, max %v", med, max)
	}
	t.Logf("latency of %d frames: median %v, p99 %v, max %v", sent, med, l.Quantile(0.99), max)
}

// maxSAsCheck: SAs go in up to Config.MaxSAs in all, the next one is
// refused with a message naming fastpath.max_sas, and every session comes
// back when they go (a second fill reaches the limit again).
func maxSAsCheck(t *testing.T, fp *Fastpath, max int) {
	t.Helper()
	key := make(model.Key, 20)
	for round := 0; round < 2; round++ {
		var ids []model.SAID
		var err error
		for i := 0; i <= max; i++ {
			sa := &model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x70000000 + uint32(i), Proto: model.ProtoESP},
				Src: gwAddr, Reqid: 900, Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16,
				EncKey: append(model.Key(nil), key...)}
			if err = fp.AddSA(sa); err != nil {
				break
			}
			ids = append(ids, sa.SAID)
		}
		if err == nil || !strings.Contains(err.Error(), "max_sas") {
			t.Fatalf("round %d: %d SAs added, then %v; want a refusal naming max_sas", round, len(ids), err)
		}
		fp.mu.Lock()
		held := len(fp.mu.sas)
		fp.mu.Unlock()
		if held != max {
			t.Fatalf("round %d: refused with %d SAs held, want %d", round, held, max)
		}
		for _, id := range ids {
			if err := fp.DelSA(id); err != nil {
				t.Fatal(err)
			}
		}
	}
}
