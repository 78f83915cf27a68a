package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/lab"
)

// TestLibreswanGateway: a libreswan gateway end to end. The gateway is a
// user-mode-Linux kernel (Linux's own XFRM and ESP) with a Debian root of
// its own holding libreswan 4.10; swanpathd runs there with source.kind =
// "xfrm" (DPDK on the instance's veths, without hugepages, both lcores on
// its one CPU). pluto brings the tunnel up with `ipsec auto --up` (IKEv2,
// PSK, esp=aes_gcm128-null, tunnel mode between the lab's LANs) against
// Debian's charon with kernel-libipsec in pr, which always encapsulates
// (encapsulation=yes). Then: ping both ways, also from the gateway itself
// into the tunnel; a paced UDP stream each way, every datagram once and
// intact; the WAN carries only IKE and ESP-in-UDP, and no ESP sequence
// number twice on one SPI (a second encryptor, the kernel, would repeat
// them); the kernel's copy of the outbound SA shows the fast path's
// sequence number and byte count, written back, and not more; `ipsec
// trafficstatus` agrees with `swanpathctl sa`.
func TestLibreswanGateway(t *testing.T) {
	if why := lab.UMLAvailable(); why != "" {
		t.Skip(why)
	}
	// issue 14 is open: in two of four runs from a fresh clone (the
	// libreswan root built in the same run) the pings through the tunnel
	// or the control calls failed, while every rerun passed; until that is
	// understood it runs outside CI (SWANPATH_LIBRESWAN=1 runs it there too)
	if os.Getenv("CI") != "" && os.Getenv("SWANPATH_LIBRESWAN") == "" {
		t.Skip("flaky on a fresh libreswan root (issue 14 open): run with SWANPATH_LIBRESWAN=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	root, err := lab.LibreswanRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := lab.New(t, lab.Options{KernelGatewayRoot: root})
	t.Logf("root and lab in %v", time.Since(t0).Round(time.Millisecond))
	t1 := time.Now()
	g, err := l.StartXFRMGateway(ctx, swanpathdBin, swanpathctlBin, lab.LibreswanConn{Encap: true}, lab.Tunnel{Encap: true})
	if g != nil && g.D != nil {
		defer func() {
			if t.Failed() {
				t.Logf("swanpathd:\n%s", lastLines(g.D.Output(), 80))
				if g.Pluto != nil {
					t.Logf("pluto:\n%s", lastLines(g.Pluto.Output(), 80))
				}
			}
		}()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swanpathd, charon, pluto and the tunnel up in %v", time.Since(t1).Round(time.Millisecond))
	gw := l.Host(lab.GW).(*lab.UML)
	t2 := time.Now()

	// pluto's policies reach the fast path through the mirror a moment
	// after the kernel has them: what is forwarded in that moment leaves
	// in clear (the kernel no longer encrypts it, see bridge/xfrm
	// bypass.go; a known gap of the XFRM source, in the README). The
	// checks below are of the tunnel once mirrored. In user-mode Linux the
	// one CPU is shared by the DPDK worker, the control threads and pluto:
	// a control call can take seconds there (seen: the control socket's
	// 10-s deadline passed twice in a row on a loaded machine).
	err = lab.PollFor(ctx, "pluto's outbound policy bound to its SA in the fast path", 90*time.Second, 50*time.Millisecond, func() (bool, error) {
		out, err := g.D.Ctl(ctx, "policy", "--json")
		if err != nil {
			return false, err
		}
		var pols []ctl.Policy
		if err := json.Unmarshal([]byte(out), &pols); err != nil {
			return false, err
		}
		for _, p := range pols {
			if p.Dir == "out" && p.SPI != "" {
				return true, nil
			}
		}
		return false, fmt.Errorf("policies: %s", out)
	})
	if err != nil {
		t.Fatal(err)
	}
	cw, err := captureWAN(l)
	if err != nil {
		t.Fatal(err)
	}
	defer cw.stop()
	for _, p := range []struct{ from, to string }{{lab.H1, lab.H2Addr}, {lab.H2, lab.H1Addr}} {
		if err := l.Ping(ctx, p.from, p.to, 5); err != nil {
			t.Fatal(err)
		}
	}
	// the gateway's own traffic for the protected subnets leaves in
	// clear into the TAP (swanpathd's bypass pair), not through the
	// kernel's ESP
	if _, err := gw.Exec(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", lab.GWLanAddr, lab.H2Addr); err != nil {
		t.Fatalf("ping from the gateway into the tunnel: %v", err)
	}
	streams := []lab.SeqOptions{
		{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7001, Rate: 200, Duration: 3 * time.Second, Size: 300},
		{From: lab.H2, To: lab.H1, ToAddr: lab.H1Addr, Port: 7002, Rate: 200, Duration: 3 * time.Second, Size: 300},
	}
	l.RunUDPSeqs(ctx, t, streams...)
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
	// one encryptor per SA: found by this test as ESP sequence numbers
	// 1.. sent twice on the outbound SA (the kernel encrypted the first
	// pings with its copy before swanpathd's per-policy bypass pair was
	// in; the global bypass pairs fixed it, bridge/xfrm/bypass.go)
	again, seqErr := uniqueESPSeq(pkts, lab.GWWanAddr)
	if again > 0 {
		t.Logf("%d ESP frames from the gateway arrived twice, byte for byte (a duplicate on the way, not a second encryptor)", again)
	}
	t.Logf("traffic: WAN ESP gw -> pr %d, pr -> gw %d, IKE %d (%v)", w.toPeer, w.fromPeer, w.ike, time.Since(t2).Round(time.Millisecond))

	// the kernel's copy of the outbound SA: the fast path's counters,
	// written back every second; the kernel sent nothing of its own
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
	if out.Aead == "" || !out.Encap {
		t.Errorf("outbound SA in the fast path: %+v; want AES-GCM in UDP", *out)
	}
	var kBytes, kPkts, kSeq uint64
	err = lab.PollFor(ctx, "the fast path's counters in the kernel's SA", 10*time.Second, 200*time.Millisecond, func() (bool, error) {
		st, err := gw.Exec(ctx, "ip", "-s", "xfrm", "state", "get", "src", lab.GWWanAddr, "dst", lab.PRWanAddr, "proto", "esp", "spi", out.SPI)
		if err != nil {
			return false, err
		}
		b := regexp.MustCompile(`(\d+)\(bytes\), (\d+)\(packets\)`).FindStringSubmatch(st)
		o := regexp.MustCompile(`oseq 0x([0-9a-f]+)`).FindStringSubmatch(st)
		if b == nil || o == nil {
			return false, fmt.Errorf("no counters in\n%s", st)
		}
		kBytes, kPkts, kSeq = atou(b[1]), atou(b[2]), hexu(o[1])
		return kPkts == out.Packets && kBytes == out.Bytes, fmt.Errorf("kernel %d bytes %d packets oseq %d; fast path %d bytes %d packets", kBytes, kPkts, kSeq, out.Bytes, out.Packets)
	})
	if err != nil {
		t.Fatal(err)
	}
	// oseq is the last sequence number the fast path sent: one per packet
	if kSeq != out.Packets {
		t.Errorf("kernel's oseq %d, fast path sent %d packets", kSeq, out.Packets)
	}
	if xs, err := gw.Exec(ctx, "cat", "/proc/net/xfrm_stat"); err == nil {
		for _, k := range []string{"XfrmOutStateSeqError", "XfrmOutStateModeError", "XfrmOutNoStates", "XfrmOutPolBlock"} {
			if m := regexp.MustCompile(k + `\s+(\d+)`).FindStringSubmatch(xs); m != nil && m[1] != "0" {
				t.Errorf("the kernel's XFRM output %s = %s:\n%s", k, m[1], xs)
			}
		}
	}
	// ipsec trafficstatus: pluto reads the kernel's SA, which carries the
	// fast path's counts
	ts, err := g.Pluto.TrafficStatus(ctx)
	if err != nil || len(ts) != 1 {
		t.Fatalf("ipsec trafficstatus: %v %+v", err, ts)
	}
	near := func(a, b uint64) bool { return a+2000 >= b && b+2000 >= a }
	if !near(ts[0].OutBytes, out.Bytes) || !near(ts[0].InBytes, in.Bytes) {
		t.Errorf("ipsec trafficstatus says in %d out %d bytes, swanpathctl sa in %d out %d", ts[0].InBytes, ts[0].OutBytes, in.Bytes, out.Bytes)
	}
	t.Logf("outbound SA %s: fast path %d packets %d bytes, kernel oseq %d; trafficstatus in %d out %d, swanpathctl in %d out %d",
		out.SPI, out.Packets, out.Bytes, kSeq, ts[0].InBytes, ts[0].OutBytes, in.Bytes, out.Bytes)
	if seqErr != nil {
		t.Errorf("AES-GCM IV reuse: %v", seqErr)
	}
}

// uniqueESPSeq fails if any ESP (in UDP) from src on the WAN repeats a
// sequence number on its SPI with other bytes: one encryptor per SA. It
// counts the frames seen twice byte for byte (the same frame again).
func uniqueESPSeq(pkts []lab.Packet, src string) (int, error) {
	type key struct{ spi, seq uint32 }
	seen := map[key]lab.Packet{}
	var dups []string
	n, same := 0, 0
	for _, p := range pkts {
		if p.Src.String() != src || !(p.ESPinUDP || p.Proto == 50) || len(p.Data) < 14+20 {
			continue
		}
		ip := p.Data[14:]
		off := int(ip[0]&0x0f) * 4
		if p.ESPinUDP {
			off += 8
		}
		if len(ip) < off+8 {
			continue
		}
		k := key{binary.BigEndian.Uint32(ip[off:]), binary.BigEndian.Uint32(ip[off+4:])}
		if q, ok := seen[k]; ok {
			if bytes.Equal(q.Data, p.Data) {
				same++ // the same frame delivered again: not a second encryptor
				continue
			}
			dups = append(dups, fmt.Sprintf("spi 0x%08x seq %d: %s at %s and %s at %s", k.spi, k.seq,
				q, q.Time.Format("15:04:05.000000"), p, p.Time.Format("15:04:05.000000")))
			continue
		}
		seen[k] = p
		n++
	}
	if len(dups) > 0 {
		return same, fmt.Errorf("%d ESP sequence numbers sent twice from %s (two encryptors of one SA), first: %s", len(dups), src, strings.Join(dups[:min(len(dups), 5)], "; "))
	}
	if n == 0 {
		return same, fmt.Errorf("no ESP from %s with its header captured", src)
	}
	return same, nil
}

func hexu(s string) uint64 {
	v, _ := strconv.ParseUint(s, 16, 64)
	return v
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
