package fastpath

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// Lookaside crypto under steady load: the worker always has ops in its
// crypto device (ipsec-mb's multi-buffer PMD keeps jobs in its lanes), so
// it must finish them when a control thread waits for a quiescent state,
// else every SA removal and policy table swap waits for ever. net_pcap
// replays frames without end (as the benchmark does) into net_null.

const lookasideEnv = "SWANPATH_FASTPATH_LOOKASIDE_CHILD"

func TestFastpathLookasideUnderLoad(t *testing.T) {
	if inChild() || testing.Short() || os.Geteuid() != 0 {
		t.Skip("the parent runs it, with root, DPDK and hugepages")
	}
	pcap := filepath.Join(t.TempDir(), "plain.pcap")
	writePcap(t, pcap, 64)
	runChild(t, "fpl", "TestFastpathLookasideChild", lookasideEnv, pcap, false)
}

// writePcap writes n plaintext frames h1 -> 10.2.0.x (one per SA of the
// child) as a pcap file (microseconds, Ethernet).
func writePcap(t *testing.T, path string, n int) {
	t.Helper()
	var buf bytes.Buffer
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], 65535)
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	buf.Write(hdr)
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for i := range n {
		dst := netip.AddrFrom4([4]byte{10, 2, 0, byte(10 + i%lookasideSAs)})
		f := frame(mac, mac, ipv4udp(h1, dst, 1000, 2000, 64, make([]byte, 64)))
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(f)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(f)))
		buf.Write(rec)
		buf.Write(f)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

const lookasideSAs = 16

func TestFastpathLookasideChild(t *testing.T) {
	env := childArg(t, lookasideEnv, "TestFastpathLookasideUnderLoad")
	ns, pcap, _ := strings.Cut(env, ",")
	fp, err := Open(Config{
		EALArgs: childEAL(ns, "-l", "0,1"),
		Ports: []PortConfig{
			{Name: "lan", Device: "net_pcap0,rx_pcap=" + pcap + ",infinite_rx=1", Tap: "tla"},
			{Name: "wan", Device: "net_null0,no-rx=1", Tap: "twa"},
		},
		Crypto:          "aesni_mb",
		LookasideCrypto: true,
		MaxSAs:          256,
		Log:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	fp.SetClosed(false) // no charon here: forward by the policies the test installs

	// one AES-CBC + HMAC-SHA-256 SA per remote host, each with its policy
	var binds []dataplane.Binding
	var ids []model.SAID
	for i := range lookasideSAs {
		ek, ik := make(model.Key, 16), make(model.Key, 32)
		_, _ = rand.Read(ek)
		_, _ = rand.Read(ik)
		sa := &model.SA{SAID: model.SAID{Dst: peerAddr, SPI: uint32(0x5000 + i), Proto: model.ProtoESP}, Src: gwAddr,
			Reqid: uint32(100 + i), Mode: model.ModeTunnel, EncAlg: model.EncrAESCBC, EncKey: ek,
			IntAlg: model.IntegHMACSHA256_128, IntKey: ik}
		if err := fp.AddSA(sa); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sa.SAID)
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, 0, byte(10 + i)}), 32)
		binds = append(binds, dataplane.Binding{Policy: &model.Policy{PolicyID: model.PolicyID{
			Sel: model.Selector{Src: netip.MustParsePrefix("10.1.0.0/24"), Dst: dst}, Dir: model.DirOut},
			Reqid: uint32(100 + i), Mode: model.ModeTunnel}, SA: sa.SAID, HasSA: true})
	}
	if err := fp.SetFIB(dataplane.FIB{
		// the plaintext's source behind the port it comes in on (the
		// reverse path check of what a policy protects)
		Routes: []dataplane.Route{{Dst: netip.PrefixFrom(peerAddr, 32), Port: 1},
			{Dst: netip.MustParsePrefix("10.1.0.0/24"), Port: 0}},
		Neighs: []dataplane.Neigh{{Port: 1, IP: peerAddr, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := fp.SetPolicies(binds); err != nil {
		t.Fatal(err)
	}
	espOut := func() uint64 { return fp.PortStats()[0].Counters["esp_out"] }
	deadline := time.Now().Add(20 * time.Second)
	for espOut() < 100000 {
		if time.Now().After(deadline) {
			t.Fatalf("traffic does not flow: esp_out %d", espOut())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, _ := fp.SAStats(ids[0]); st.CryptoMode != "lookaside" {
		t.Fatalf("crypto mode %q, want lookaside", st.CryptoMode)
	}

	// while the worker is busy: a policy table swap and an SA removal,
	// both of which wait for the worker's quiescent state
	done := make(chan error, 1)
	go func() {
		if err := fp.SetPolicies(binds[1:]); err != nil {
			done <- err
			return
		}
		done <- fp.DelSA(ids[0])
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		// the hung call holds the lock Close needs: leave without it
		t.Errorf("a policy swap and an SA removal under load did not return within 20 s (esp_out %d)", espOut())
		os.Exit(1)
	}
	before := espOut()
	for espOut() < before+100000 {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatalf("traffic stopped after the removal: esp_out %d", espOut())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := fp.PortStats()[0].Counters["drop_crypto"]; n != 0 {
		t.Errorf("drop_crypto %d", n)
	}
}
