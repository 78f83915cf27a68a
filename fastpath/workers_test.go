package fastpath

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// Two worker lcores (on however many CPUs there are): each polls its own
// queue of every port (af_packet spreads flows over them), and the SA's
// sequence numbers stay unique and gapless across both.

const workersEnv = "SWANPATH_FASTPATH_WORKERS_CHILD"

func TestFastpathTwoWorkers(t *testing.T) {
	runChild(t, "fpw", "TestFastpathWorkersChild", workersEnv, "", true)
}

func TestFastpathWorkersChild(t *testing.T) {
	ns := childArg(t, workersEnv, "TestFastpathTwoWorkers")
	fp, err := Open(Config{
		// three lcores on the first CPU(s): main and two workers
		EALArgs:   childEAL(ns, "--lcores", "0@0,1@1,2@0"),
		Ports:     []PortConfig{{Name: "a", Device: "net_af_packet0,iface=va", Tap: "tpa"}},
		IdleSleep: 10 * time.Microsecond,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	fp.SetClosed(false) // no charon here: forward by the policies the test installs
	if len(fp.workers) != 2 {
		t.Fatalf("%d workers, want 2", len(fp.workers))
	}
	vb, err := net.InterfaceByName("vb")
	if err != nil {
		t.Fatal(err)
	}
	wire := openRaw(t, vb.Index)
	defer syscall.Close(wire)
	portMAC := fp.Ports()[0].MAC
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	tun := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x9001, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 9,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500, ReplayWindow: 1024}
	out, in := e.addPair(tun, key)
	sel := model.Selector{Src: netip.MustParsePrefix("10.1.0.0/24"), Dst: netip.MustParsePrefix("10.2.0.0/24")}
	pol := func(d model.Dir) *model.Policy {
		return &model.Policy{PolicyID: model.PolicyID{Sel: sel, Dir: d}, Reqid: 9, Mode: model.ModeTunnel}
	}
	if err := fp.SetPolicies([]dataplane.Binding{{Policy: pol(model.DirOut), SA: out, HasSA: true}, {Policy: pol(model.DirFwd)}}); err != nil {
		t.Fatal(err)
	}
	if err := fp.SetFIB(dataplane.FIB{
		Routes: []dataplane.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Port: 0, Gateway: peerAddr}},
		Neighs: []dataplane.Neigh{{Port: 0, IP: peerAddr, MAC: vb.HardwareAddr}},
		Addrs:  []netip.Addr{gwAddr, peerAddr}, // both ends are this fast path
	}); err != nil {
		t.Fatal(err)
	}
	settle(wire)

	// many flows (source ports), so that the fanout hash uses both queues
	const n = 400
	go func() {
		for i := range n {
			e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, uint16(10000+i), 2000, 64, []byte(fmt.Sprintf("flow-%d", i)))))
			if i%50 == 49 {
				time.Sleep(time.Millisecond) // the veth queue is short
			}
		}
	}()
	seqs := map[uint32]int{}
	var esps [][]byte
	deadline := time.Now().Add(10 * time.Second)
	for len(esps) < n && time.Now().Before(deadline) {
		f, err := recvType(wire, 2*time.Second, 0x0800, func(ip []byte) bool {
			return ip[9] == 17 && binary.BigEndian.Uint32(ip[28:]) == 0x9001
		})
		if err != nil {
			break
		}
		seqs[binary.BigEndian.Uint32(f[14+32:])]++
		esps = append(esps, e.back(f))
	}
	if len(esps) != n {
		drops := "unknown"
		if st, err := unix.GetsockoptTpacketStats(wire, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			drops = fmt.Sprint(st.Drops)
		}
		t.Fatalf("%d of %d packets came out encrypted (counters %v; the test's socket dropped %s)", len(esps), n, e.counters(), drops)
	}
	for s := uint32(1); s <= n; s++ {
		if seqs[s] != 1 {
			t.Fatalf("sequence number %d used %d times (want every one of 1..%d once)", s, seqs[s], n)
		}
	}
	var perWorker [2]uint64
	for w := range 2 {
		perWorker[w] = uint64(fp.dp.w[w].stats[0].cnt[0]) // SP_CNT_RX
	}
	if perWorker[0] == 0 || perWorker[1] == 0 {
		t.Fatalf("frames received per worker %v: the second queue carried nothing", perWorker)
	}
	t.Logf("frames received per worker: %v", perWorker)
	// and back in: every one decrypts once, through either worker
	for _, f := range esps {
		e.send(f)
	}
	waitCounter(t, fp, "esp_in", uint64(n))
	if st, _ := fp.SAStats(in); st.Packets != n {
		t.Fatalf("inbound SA: %d packets, want %d", st.Packets, n)
	}
	if st, _ := fp.SAStats(out); st.Packets != n || st.SeqUsed != n+1 {
		t.Fatalf("outbound SA: %+v, want %d packets, next sequence number %d", st, n, n+1)
	}
}
