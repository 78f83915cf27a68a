package lab

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTunnelLibipsec proves the lab: the gateway runs charon with
// kernel-libipsec too (addresses on its veths), the tunnel comes up, pings
// and iperf3 pass both ways, and the WAN carries that flow only as
// ESP-in-UDP.
func TestTunnelLibipsec(t *testing.T) {
	for _, esp := range []string{"aes128gcm16", "aes256gcm16"} {
		t.Run(esp, func(t *testing.T) { testTunnelLibipsec(t, esp) })
	}
}

func testTunnelLibipsec(t *testing.T, esp string) {
	l := New(t, Options{GatewayAddrs: true})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	tun := Tunnel{ESPProposals: esp, Encap: true}
	gw, err := l.StartCharon(GW, CharonOptions{Plugins: []Plugin{LibipsecPlugin()}, Swanctl: tun.GatewayConf()})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.LoadAll(ctx); err != nil {
		t.Fatal(err)
	}
	pr, err := l.StartPeer(ctx, tun)
	if err != nil {
		t.Fatal(err)
	}

	wan, err := l.Capture(GW, GWWan, "ip")
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := gw.Initiate(ctx, ChildName); err != nil {
		t.Fatal(err)
	}
	gwChild, err := gw.WaitEstablished(ctx, ChildName)
	if err != nil {
		t.Fatal(err)
	}
	prChild, err := pr.WaitEstablished(ctx, ChildName)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tunnel up in %v: gw spi in/out %s/%s, pr %s/%s, encap %v", time.Since(start).Round(time.Millisecond),
		gwChild.SPIIn, gwChild.SPIOut, prChild.SPIIn, prChild.SPIOut, gwChild.Encap)
	if gwChild.SPIIn != prChild.SPIOut || gwChild.SPIOut != prChild.SPIIn {
		t.Errorf("SPIs do not mirror: gw %s/%s pr %s/%s", gwChild.SPIIn, gwChild.SPIOut, prChild.SPIIn, prChild.SPIOut)
	}
	if !gwChild.Encap || !prChild.Encap {
		t.Errorf("CHILD_SA not UDP-encapsulated: gw %v pr %v", gwChild.Encap, prChild.Encap)
	}

	if err := l.Ping(ctx, H1, H2Addr, 5); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx, H2, H1Addr, 5); err != nil {
		t.Fatal(err)
	}
	for _, reverse := range []bool{false, true} {
		r, err := l.Iperf3(ctx, H2, H2Addr, H1, 3, reverse)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("iperf3 h1->h2 reverse=%v: %d bytes, %.1f Mbit/s, %d retransmits", reverse, r.Bytes, r.BitsPerSec/1e6, r.Retransmits)
	}

	sas, err := gw.ListSAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, c, ok := Child(sas, ChildName)
	if !ok {
		t.Fatalf("child gone: %s", summarize(sas))
	}
	if c.PacketsIn < 10 || c.PacketsOut < 10 || c.BytesIn == 0 || c.BytesOut == 0 {
		t.Errorf("gw counters too low: %+v", c)
	}

	pkts, err := wan.Stop()
	if err != nil {
		t.Fatal(err)
	}
	checkWAN(t, pkts)
}

// checkWAN: between the gateways only IKE/ESP on UDP 500/4500; inner
// addresses never appear in clear.
func checkWAN(t *testing.T, pkts []Packet) {
	t.Helper()
	s, err := CheckWAN(pkts)
	t.Logf("WAN capture: %+v", s)
	if err != nil {
		t.Error(err)
	}
	if s.ESPinUDP < 20 {
		t.Errorf("only %d ESP-in-UDP packets on WAN", s.ESPinUDP)
	}
}

// TestCleanupRemovesNamespaces runs a lab in a subtest, with a background
// process, and checks that afterwards neither namespaces nor processes nor
// the marker are left.
func TestCleanupRemovesNamespaces(t *testing.T) {
	var prefix string
	var pid int
	t.Run("lab", func(t *testing.T) {
		l := New(t, Options{})
		prefix = l.Prefix()
		p, err := l.NS(PR).Start("sleep", "600")
		if err != nil {
			t.Fatal(err)
		}
		pid = p.Pid()
		// A process the lab did not start itself, found via ip netns pids.
		if _, err := l.NS(H2).Exec(context.Background(), "sh", "-c", "setsid sleep 600 >/dev/null 2>&1 &"); err != nil {
			t.Fatal(err)
		}
		if out, _ := output(context.Background(), "ip", "netns", "list"); !strings.Contains(out, prefix+"-gw") {
			t.Fatalf("namespace %s-gw missing: %s", prefix, out)
		}
	})
	if prefix == "" {
		t.Skip("lab not built")
	}
	out, err := output(context.Background(), "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, prefix) {
		t.Errorf("namespaces of %s left after cleanup:\n%s", prefix, out)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("process %d still alive", pid)
	}
	if _, err := os.Stat(markerDir + "/" + prefix); err == nil {
		t.Errorf("marker of %s left", prefix)
	}
}

// TestRemoveStale fakes a lab of a dead process and checks that
// RemoveStale deletes it but leaves a live lab and foreign names alone.
func TestRemoveStale(t *testing.T) {
	live := New(t, Options{})
	ctx := context.Background()
	stale := "sp0dead0"
	if err := run(ctx, "ip", "netns", "add", stale+"-gw"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = destroy(stale, []string{"gw"}) })
	if err := os.WriteFile(markerDir+"/"+stale, []byte("2147483646\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale(); err != nil {
		t.Fatal(err)
	}
	if netnsExists(stale + "-gw") {
		t.Errorf("stale namespace %s-gw not removed", stale)
	}
	if !netnsExists(live.NS(GW).Name) {
		t.Errorf("live namespace %s removed", live.NS(GW).Name)
	}
}

// TestCharonPrivateRun: charon's pid file lands in its private /run, and
// RunBinds directories of the host's /run stay visible to it.
func TestCharonPrivateRun(t *testing.T) {
	l := New(t, Options{})
	c, err := l.StartCharon(GW, CharonOptions{RunBinds: []string{markerDir}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), "run", "charon.pid")); err != nil {
		t.Errorf("pid file not in private run dir: %v", err)
	}
	out, err := output(context.Background(), "nsenter", "-t", strconv.Itoa(c.Proc().Pid()), "-m", "ls", markerDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, l.Prefix()) {
		t.Errorf("%s not visible to charon: %q", markerDir, out)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("stop charon: %v", err)
	}
}
