package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/lab"
)

// TestXFRMCharonGateway: strongSwan without the plugin. The gateway is a
// user-mode-Linux kernel (Linux's own XFRM and ESP) on this machine's
// root, running Debian's charon with kernel-netlink — the kernel-swanpath
// plugin is not loaded — and swanpathd with source.kind = "xfrm": charon
// installs its SAs, policies (its own priorities, in, out and fwd) and its
// routes in table 220 in the kernel as on any Linux gateway, and the
// mirror puts them into the fast path. Against the lab's usual peer
// (charon with kernel-libipsec in pr, ESP-in-UDP): the tunnel comes up;
// ping both ways and from the gateway itself (charon's table-220 route
// into swanpathd's TAP); a paced UDP stream each way, every datagram once
// and intact; the WAN carries only IKE and ESP-in-UDP, no ESP sequence
// number twice; the mirror refused nothing charon installed; the kernel's
// copy of the outbound SA sent nothing of its own (its counters and oseq
// are exactly the fast path's, written back; the kernel's XFRM output
// error counters stay 0); `swanctl --list-sas` on the gateway shows the
// fast path's bytes and packets both ways (charon reads them from the
// kernel's SAs).
func TestXFRMCharonGateway(t *testing.T) {
	if why := lab.UMLAvailable(); why != "" {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := lab.New(t, lab.Options{KernelGatewayRoot: "/"})
	t0 := time.Now()
	tun := lab.Tunnel{Encap: true}
	g, err := l.StartXFRMCharonGateway(ctx, swanpathdBin, swanpathctlBin, tun)
	if g != nil && g.D != nil {
		defer func() {
			if t.Failed() {
				t.Logf("gateway at the failure:\n%s", g.Diagnose())
			}
		}()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swanpathd, both charons and the tunnel up in %v", time.Since(t0).Round(time.Millisecond))
	gw := l.Host(lab.GW).(*lab.UML)

	// charon's IPsec backend is the kernel (kernel-netlink), not swanpathd
	loaded := regexp.MustCompile(`loaded plugins: (.*)`).FindStringSubmatch(g.GW.Log())
	if loaded == nil || strings.Contains(loaded[1], "kernel-swanpath") || !strings.Contains(loaded[1], "kernel-netlink") {
		t.Fatalf("the gateway's charon plugins: %v; want kernel-netlink and not kernel-swanpath", loaded)
	}
	if strings.Contains(g.D.Output(), "charon plugin connected") {
		t.Fatal("a charon plugin connected to swanpathd")
	}

	// charon's policies reach the fast path a moment after the kernel
	// has them (see TestLibreswanGateway); wait for the outbound one bound
	err = lab.PollFor(ctx, "charon's outbound policy bound to its SA in the fast path", 90*time.Second, 50*time.Millisecond, func() (bool, error) {
		return outBound(ctx, g.D)
	})
	if err != nil {
		t.Fatal(err)
	}
	kpols, err := gw.Exec(ctx, "ip", "xfrm", "policy")
	if err != nil {
		t.Fatal(err)
	}
	routes, err := gw.Exec(ctx, "ip", "route", "show", "table", "220")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(routes, lab.RightNet) {
		t.Errorf("no route of charon's to %s in table 220:\n%s", lab.RightNet, routes)
	}
	for _, bad := range []string{"xfrm mirror: policy refused", "xfrm mirror: SA refused", "unreadable"} {
		if strings.Contains(g.D.Output(), bad) {
			t.Errorf("the mirror refused what charon installed (%q); kernel policies:\n%s", bad, kpols)
		}
	}

	cw, err := captureWAN(l)
	if err != nil {
		t.Fatal(err)
	}
	defer cw.stop()
	// the gateway's own traffic for the remote subnet follows charon's
	// route in table 220 into swanpathd's WAN TAP, in clear (swanpathd's
	// bypass policies), and the fast path encrypts it
	pingAndStream(t, ctx, l, gw)
	pkts, err := cw.stop()
	if err != nil {
		t.Fatal(err)
	}
	w, err := checkESPKind(pkts, lab.GWWanAddr, lab.PRWanAddr, true)
	if err != nil {
		t.Error(err)
	}
	if w.toPeer < 600 || w.fromPeer < 600 {
		t.Errorf("ESP on the WAN: %d packets gw -> pr, %d pr -> gw; want the traffic both ways", w.toPeer, w.fromPeer)
	}
	if _, err := uniqueESPSeq(pkts, lab.GWWanAddr); err != nil {
		t.Errorf("AES-GCM IV reuse: %v", err)
	}

	sas, err := g.D.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out, in *ctl.SA
	for i := range sas {
		switch sas[i].Dir {
		case "out":
			out = &sas[i]
		case "in":
			in = &sas[i]
		}
	}
	if out == nil || in == nil || len(sas) != 2 {
		t.Fatalf("swanpathd's SAs: want one in, one out: %+v", sas)
	}
	if out.Aead == "" || !out.Encap || out.Packets < 600 || in.Packets < 600 {
		t.Fatalf("SAs in the fast path: out %+v in %+v; want AES-GCM in UDP carrying the streams", *out, *in)
	}
	// the kernel's copy of the outbound SA: exactly the fast path's
	// counters, written back; the kernel sent nothing of its own
	var kBytes, kPkts, kSeq uint64
	err = lab.PollFor(ctx, "the fast path's counters in the kernel's SA", 10*time.Second, 200*time.Millisecond, func() (bool, error) {
		st, err := gw.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", lab.GWWanAddr, "dst", lab.PRWanAddr, "proto", "esp", "spi", out.SPI)
		if err != nil {
			return false, err
		}
		k, err := parseKernelSA(st)
		if err != nil {
			return false, err
		}
		kBytes, kPkts, kSeq = k.bytes, k.packets, k.oseq
		return kPkts == out.Packets && kBytes == out.Bytes, fmt.Errorf("kernel %d bytes %d packets oseq %d; fast path %d bytes %d packets", kBytes, kPkts, kSeq, out.Bytes, out.Packets)
	})
	if err != nil {
		t.Fatal(err)
	}
	if kSeq != out.Packets {
		t.Errorf("kernel's oseq %d, fast path sent %d packets", kSeq, out.Packets)
	}
	if xs, err := gw.Exec(ctx, "cat", "/proc/net/xfrm_stat"); err == nil {
		for _, k := range []string{"XfrmOutStateSeqError", "XfrmOutStateModeError", "XfrmOutNoStates", "XfrmOutPolBlock", "XfrmOutStateProtoError"} {
			if m := regexp.MustCompile(k + `\s+(\d+)`).FindStringSubmatch(xs); m != nil && m[1] != "0" {
				t.Errorf("the kernel's XFRM output %s = %s:\n%s", k, m[1], xs)
			}
		}
	}
	// swanctl --list-sas: charon asks the kernel for its SAs' counters,
	// which are the fast path's
	var sIn, sOut [2]uint64 // bytes, packets
	err = lab.PollFor(ctx, "swanctl --list-sas shows the fast path's counters", 10*time.Second, 200*time.Millisecond, func() (bool, error) {
		ls, err := g.GW.Swanctl(ctx, "--list-sas")
		if err != nil {
			return false, err
		}
		for _, d := range []struct {
			dir string
			spi string
			to  *[2]uint64
		}{{"in", in.SPI, &sIn}, {"out", out.SPI, &sOut}} {
			m := regexp.MustCompile(`(?m)^\s+` + d.dir + `\s+` + strings.TrimPrefix(d.spi, "0x") + `\b[^,]*,\s+(\d+) bytes,\s+(\d+) packets`).FindStringSubmatch(ls)
			if m == nil {
				return false, fmt.Errorf("no %s SA %s in\n%s", d.dir, d.spi, ls)
			}
			*d.to = [2]uint64{atou(m[1]), atou(m[2])}
		}
		return sIn == [2]uint64{in.Bytes, in.Packets} && sOut == [2]uint64{out.Bytes, out.Packets},
			fmt.Errorf("swanctl in %v out %v; swanpathctl in %d/%d out %d/%d", sIn, sOut, in.Bytes, in.Packets, out.Bytes, out.Packets)
	})
	if err != nil {
		t.Error(err)
	}
	t.Logf("outbound SA %s: fast path %d packets %d bytes, kernel oseq %d; swanctl in %v out %v (bytes, packets); WAN ESP gw -> pr %d, pr -> gw %d, IKE %d",
		out.SPI, out.Packets, out.Bytes, kSeq, sIn, sOut, w.toPeer, w.fromPeer, w.ike)
	if testing.Verbose() {
		t.Logf("kernel policies on the gateway:\n%s\ntable 220:\n%s", kpols, routes)
	}
}
