package lab

import (
	"context"
	"net/netip"
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

// TestIPv6Addressing proves Options.IPv6 without swanpathd (addresses on
// the veths, kernel forwarding): every address is there at once (no DAD
// pending), every neighbour answers over IPv6, the hosts' default routes
// point at their router, gw and pr have no route to the LAN behind the
// other (only a tunnel may join the LANs), and once the test adds those
// two routes, h1 and h2 reach each other with the packets crossing the
// WAN, forwarded by both routers. IPv4 keeps working beside it.
func TestIPv6Addressing(t *testing.T) {
	l := New(t, Options{GatewayAddrs: true, IPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, a := range []struct{ role, dev, addr string }{
		{H1, HostIf, H1Addr6}, {GW, GWLan, GWLanAddr6}, {GW, GWWan, GWWanAddr6},
		{PR, PRWan, PRWanAddr6}, {PR, PRLan, PRLanAddr6}, {H2, HostIf, H2Addr6},
	} {
		out, err := l.NS(a.role).Exec(ctx, "ip", "-6", "-o", "addr", "show", "dev", a.dev, "scope", "global")
		if err != nil {
			t.Fatal(err)
		}
		line := ""
		for _, ln := range strings.Split(out, "\n") {
			if strings.Contains(ln, " "+a.addr+"/64 ") {
				line = ln
			}
		}
		switch {
		case line == "":
			t.Errorf("%s %s: no %s/64: %q", a.role, a.dev, a.addr, out)
		case strings.Contains(line, "tentative") || strings.Contains(line, "dadfailed"):
			t.Errorf("%s %s: %s not usable yet: %q", a.role, a.dev, a.addr, line)
		}
	}
	for _, r := range []struct{ role, via string }{{H1, GWLanAddr6}, {H2, PRLanAddr6}} {
		out, err := l.NS(r.role).Exec(ctx, "ip", "-6", "route", "show", "default")
		if err != nil || !strings.Contains(out, "via "+r.via+" ") {
			t.Errorf("%s: IPv6 default route %q (%v), want via %s", r.role, out, err, r.via)
		}
	}
	for _, role := range []string{GW, PR} {
		out, err := l.NS(role).Exec(ctx, "sysctl", "-n", "net.ipv6.conf.all.forwarding", "net.ipv4.ip_forward")
		if err != nil || strings.Fields(out)[0] != "1" || strings.Fields(out)[1] != "1" {
			t.Errorf("%s: forwarding (ipv6, ipv4) = %q %v, want 1 1", role, out, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// neighbours, and each router's far address through its near one
	for _, p := range []struct{ from, to string }{
		{H1, GWLanAddr6}, {H1, GWWanAddr6}, {GW, PRWanAddr6}, {PR, GWWanAddr6},
		{H2, PRLanAddr6}, {H2, PRWanAddr6}, {H1, GWLanAddr}, {H2, PRLanAddr},
	} {
		if err := l.Ping(ctx, p.from, p.to, 2); err != nil {
			t.Fatal(err)
		}
	}

	// the peer does not route the far LAN outside a tunnel; the gateway
	// does only by its default route out of the WAN, as a real one
	if out, err := l.NS(PR).Exec(ctx, "ip", "-6", "route", "get", H1Addr6); err == nil {
		t.Fatalf("%s routes %s outside a tunnel: %s", PR, H1Addr6, out)
	}
	if out, err := l.NS(GW).Exec(ctx, "ip", "-6", "route", "get", H2Addr6); err != nil || !strings.Contains(out, "via "+PRWanAddr6+" dev "+GWWan) {
		t.Fatalf("%s routes %s by %q (%v), want its default route via %s dev %s", GW, H2Addr6, out, err, PRWanAddr6, GWWan)
	}
	for _, c := range []struct{ role, net, via string }{{GW, RightNet6, PRWanAddr6}, {PR, LeftNet6, GWWanAddr6}} {
		if _, err := l.NS(c.role).Exec(ctx, "ip", "-6", "route", "add", c.net, "via", c.via); err != nil {
			t.Fatal(err)
		}
	}
	wan, err := l.Capture(GW, GWWan, "icmp6")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx, H1, H2Addr6, 5); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(ctx, H2, H1Addr6, 5); err != nil {
		t.Fatal(err)
	}
	pkts, err := wan.Stop()
	if err != nil {
		t.Fatal(err)
	}
	// ICMPv6 echo request (128) and reply (129) between the hosts, each
	// forwarded once by the router before the WAN (hop limit 64 - 1)
	h1, h2 := netip.MustParseAddr(H1Addr6), netip.MustParseAddr(H2Addr6)
	echoes := map[uint8]int{}
	for _, p := range pkts {
		src, dst, hops, icmpType, ok := icmp6(p.Data)
		if !ok || !(src == h1 && dst == h2 || src == h2 && dst == h1) {
			continue
		}
		if hops != 63 {
			t.Errorf("%s > %s type %d with hop limit %d on the WAN, want 63", src, dst, icmpType, hops)
		}
		echoes[icmpType]++
	}
	t.Logf("WAN: %d ICMPv6 frames, %d echo requests and %d replies between h1 and h2", len(pkts), echoes[128], echoes[129])
	if echoes[128] < 10 || echoes[129] < 10 {
		t.Fatalf("h1 <-> h2 echoes on the WAN: %d requests, %d replies, want >= 10 each", echoes[128], echoes[129])
	}
}

// icmp6 decodes an Ethernet frame carrying ICMPv6 straight after the IPv6
// header.
func icmp6(b []byte) (src, dst netip.Addr, hops, icmpType uint8, ok bool) {
	if len(b) < 14+40+1 || b[12] != 0x86 || b[13] != 0xdd {
		return src, dst, 0, 0, false
	}
	ip := b[14:]
	if ip[0]>>4 != 6 || ip[6] != 58 {
		return src, dst, 0, 0, false
	}
	return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), ip[7], ip[40], true
}
