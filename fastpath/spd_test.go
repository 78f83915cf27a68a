package fastpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/model"
)

// spdCases checks the SPD's matching (rte_acl) through the loop, in the
// child process of TestFastpathRoundTrip: the first policy in priority
// order wins where selectors overlap; protocol, port ranges and IPv6
// prefixes that do not end on a 32-bit boundary are honoured.
func spdCases(t *testing.T, fp *Fastpath, wire int, vb *net.Interface, portMAC net.HardwareAddr) {
	e, key := newFamEnv(t, fp, wire, vb, portMAC)
	tun := model.SA{SAID: model.SAID{Dst: peerAddr, SPI: 0x5001, Proto: model.ProtoESP}, Src: gwAddr, Reqid: 50,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Encap: true, SrcPort: 4500, DstPort: 4500}
	out, in := e.addPair(tun, key)
	defer func() {
		_ = fp.DelSA(out)
		_ = fp.DelSA(in)
		_ = fp.SetPolicies(nil)
	}()
	p := func(src, dst string, proto uint8, dlo, dhi uint16, prio uint32, action model.PolicyAction) dataplane.Binding {
		s := model.Selector{Src: netip.MustParsePrefix(src), Dst: netip.MustParsePrefix(dst), Proto: proto,
			DstPortLo: dlo, DstPortHi: dhi}
		b := dataplane.Binding{Policy: &model.Policy{PolicyID: model.PolicyID{Sel: s, Dir: model.DirOut},
			Reqid: 50, Mode: model.ModeTunnel, Priority: prio, Action: action}}
		// the drop and pass policies are bound to the SA too (a
		// CHILD_SA's reqid): the loop must still drop and pass, since
		// an SA in a policy's slot means protect to it
		b.SA, b.HasSA = out, true
		return b
	}
	// listed out of priority order on purpose: priority decides
	if err := fp.SetPolicies([]dataplane.Binding{
		p("10.1.0.0/16", "10.2.0.0/16", 0, 0, 0, 300, model.ActionIPsec),
		p("10.1.0.0/24", "10.2.0.0/24", 17, 2000, 2010, 100, model.ActionDrop),
		p("10.1.0.0/24", "10.2.0.0/24", 6, 0, 0, 200, model.ActionPass),
		p("fd00:1::/60", "fd00:2::/64", 0, 0, 0, 100, model.ActionIPsec),
	}); err != nil {
		t.Fatal(err)
	}
	isESP := func(ip []byte) bool {
		return (ip[0]>>4 == 4 && ip[9] == 17 && binary.BigEndian.Uint32(ip[28:]) == 0x5001) ||
			(ip[0]>>4 == 6 && ip[6] == 17 && binary.BigEndian.Uint32(ip[48:]) == 0x5001)
	}
	before := e.counters()
	// TCP: the pass policy (200) wins over protect (300), though bound to
	// the SA: to the kernel as it came, not encrypted
	tcp := ipv4udp(h1, h2, 1000, 80, 64, make([]byte, 12)) // 20 bytes behind the IP header
	tcp[9] = 6
	binary.BigEndian.PutUint16(tcp[10:], 0)
	binary.BigEndian.PutUint16(tcp[10:], csum(tcp[:20]))
	e.send(frame(portMAC, vb.HardwareAddr, tcp))
	// UDP to 2005: the drop policy (priority 100) wins over protect (300)
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2005, 64, []byte("dropped"))))
	e.wait("drop_policy", before["drop_policy"]+1)
	// the TAP's counter follows its transmit burst, which may come an
	// iteration later under load than the drop's
	e.wait("tap_tx", before["tap_tx"]+1)
	// the drop came after the TCP (one queue, in order): neither was
	// encrypted, and the TCP went to the kernel
	if now := e.counters(); now["esp_out"] != before["esp_out"] || now["tap_tx"] < before["tap_tx"]+1 {
		t.Fatalf("TCP under the pass policy: esp_out %d -> %d (want +0), tap_tx %d -> %d (want +1)",
			before["esp_out"], now["esp_out"], before["tap_tx"], now["tap_tx"])
	}
	// UDP to 2011: outside the range, protected by the /16 policy
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2011, 64, []byte("protected"))))
	e.recv("UDP outside the drop range, encrypted", 0x0800, isESP)
	// fd00:1:0:f::10 is inside fd00:1::/60; fd00:1:0:10::10 is not
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(netip.MustParseAddr("fd00:1:0:f::10"), h26, 1000, 2000, 64, []byte("in-60"))))
	e.recv("IPv6 source inside the /60, encrypted (IPv4 outer)", 0x0800, isESP)
	esp0 := e.counters()["esp_out"]
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(netip.MustParseAddr("fd00:1:0:10::10"), h26, 1000, 2000, 64, []byte("out-60"))))
	// a protected packet behind it: once it is out, the one before was
	// handled (one queue, in order)
	e.send(frame6(portMAC, vb.HardwareAddr, ipv6udp(netip.MustParseAddr("fd00:1::10"), h26, 1000, 2000, 64, []byte("in-60b"))))
	e.recv("IPv6 source inside the /60 again, encrypted", 0x0800, isESP)
	if st, _ := fp.SAStats(out); st.Packets != 3 || e.counters()["esp_out"] != esp0+1 {
		t.Fatalf("outbound SA carried %d packets (want 3); esp_out %d -> %d (want +1)", st.Packets, esp0, e.counters()["esp_out"])
	}

	// a rekey: Bind moves the policy to the new SA in place
	out2, in2 := e.addPair(withSPI(tun, 0x5002), key)
	defer e.delSAs(out2, in2)
	wide := p("10.1.0.0/16", "10.2.0.0/16", 0, 0, 0, 300, model.ActionIPsec).Policy.PolicyID
	if err := fp.Bind(wide, out2, true); err != nil {
		t.Fatal(err)
	}
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2011, 64, []byte("rekeyed"))))
	e.recv("after Bind, ESP with the new SPI", 0x0800, func(ip []byte) bool {
		return ip[9] == 17 && binary.BigEndian.Uint32(ip[28:]) == 0x5002
	})
	// deleting the SA a policy is bound to leaves no dangling pointer:
	// the policy then has no SA (a trap)
	if err := fp.DelSA(out2); err != nil {
		t.Fatal(err)
	}
	b0 := e.counters()["drop_no_sa"]
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2011, 64, []byte("no-sa"))))
	e.wait("drop_no_sa", b0+1)

	// SetPolicy and DelPolicy take effect (maybe together, a moment later)
	extra := p("10.1.0.0/24", "10.2.0.0/24", 17, 3000, 3000, 50, model.ActionDrop)
	if err := fp.SetPolicy(extra); err != nil {
		t.Fatal(err)
	}
	d0 := e.counters()["drop_policy"]
	for deadline := time.Now().Add(3 * time.Second); e.counters()["drop_policy"] == d0; {
		if time.Now().After(deadline) {
			t.Fatal("a policy added with SetPolicy never took effect")
		}
		e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 3000, 64, []byte("dropped-3000"))))
		time.Sleep(5 * time.Millisecond)
	}
	if err := fp.DelPolicy(extra.Policy.PolicyID); err != nil {
		t.Fatal(err)
	}

	// beyond a thousand policies, a burst of SetPolicy calls is rebuilt
	// together (coalesced): the last of 1500 still takes effect
	for i := range 1500 {
		b := p(fmt.Sprintf("172.16.%d.%d/32", i/256, i%256), "172.31.0.0/16", 0, 0, 0, 400, model.ActionDrop)
		if err := fp.SetPolicy(b); err != nil {
			t.Fatal(err)
		}
	}
	last := p("10.1.0.0/24", "10.2.0.0/24", 17, 3001, 3001, 60, model.ActionDrop)
	if err := fp.SetPolicy(last); err != nil {
		t.Fatal(err)
	}
	d0 = e.counters()["drop_policy"]
	for deadline := time.Now().Add(5 * time.Second); e.counters()["drop_policy"] == d0; {
		if time.Now().After(deadline) {
			t.Fatal("the last policy of a burst never took effect")
		}
		e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 3001, 64, []byte("dropped-3001"))))
		time.Sleep(5 * time.Millisecond)
	}
	// now through rte_acl (the table is big): the /16 policy (priority
	// 300) still protects what the drop policies do not take
	if err := fp.Bind(wide, out, true); err != nil {
		t.Fatal(err)
	}
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2011, 64, []byte("acl-protected"))))
	e.recv("through rte_acl, encrypted", 0x0800, isESP)
	fp.mu.Lock()
	n := len(fp.mu.pols)
	acl := fp.mu.ipsec.acl_out != nil
	fp.mu.Unlock()
	if !acl {
		t.Fatal("1500 outbound policies, but no rte_acl context")
	}
	if n != 1500+5 {
		t.Fatalf("%d policies kept, want %d", n, 1500+5)
	}
	if err := fp.DelPolicy(extra.Policy.PolicyID); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("deleting a policy twice: %v", err)
	}

	// A rebuild of the big tables runs outside the lock: requests go on
	// meanwhile. A binding changed meanwhile is what the new tables carry;
	// a policy deleted meanwhile is not in them.
	out3, in3 := e.addPair(withSPI(tun, 0x5003), key)
	defer e.delSAs(out3, in3)
	isSPI := func(spi uint32) func(ip []byte) bool {
		return func(ip []byte) bool { return ip[9] == 17 && binary.BigEndian.Uint32(ip[28:]) == spi }
	}
	duringBuild := func(add dataplane.Binding, meanwhile func() error) {
		t.Helper()
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		hook := func() { once.Do(func() { close(entered); <-release }) }
		buildHook.Store(&hook)
		defer buildHook.Store(nil)
		defer close(release)
		// returns runs f and fails unless it returns, without error,
		// within 10 s
		returns := func(f func() error, what string) {
			t.Helper()
			done := make(chan error, 1)
			go func() { done <- f() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal(what)
			}
		}
		returns(func() error { return fp.SetPolicy(add) }, "adding a policy to 1500 did not return (a rebuild under the lock?)")
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("adding a policy to 1500 started no rebuild")
		}
		returns(meanwhile, "a policy request waited for the rebuild of the tables")
	}
	settled := func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			fp.mu.Lock()
			ok := fp.mu.rb.settledLocked()
			fp.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the policy tables never caught up with the policies")
			}
		}
	}
	duringBuild(p("10.1.0.0/24", "10.2.0.0/24", 17, 3002, 3002, 60, model.ActionDrop),
		func() error { return fp.Bind(wide, out3, true) })
	settled()
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2011, 64, []byte("rebound-in-build"))))
	e.recv("bound to a new SA during a rebuild, ESP with its SPI", 0x0800, isSPI(0x5003))

	// charon moving a policy to another SA by naming its SPI (a rekey's
	// responder, at the initiator's DELETE): in place, at once, with no
	// rebuild of the tables (the 1500 policies take a while to build,
	// and the old SA may go right after)
	moved := p("10.1.0.0/16", "10.2.0.0/16", 0, 0, 0, 300, model.ActionIPsec)
	moved.Policy.SPI, moved.SA, moved.HasSA = out.SPI, out, true
	fp.mu.Lock()
	installs0 := fp.mu.rb.installs
	fp.mu.Unlock()
	if err := fp.SetPolicy(moved); err != nil {
		t.Fatal(err)
	}
	fp.mu.Lock()
	rebuilding, installs1 := !fp.mu.rb.settledLocked(), fp.mu.rb.installs
	fp.mu.Unlock()
	if rebuilding || installs1 != installs0 {
		t.Fatalf("a policy's move to the SPI it names rebuilt the tables (pending %v, %d installs)", rebuilding, installs1-installs0)
	}
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2011, 64, []byte("moved-by-spi"))))
	e.recv("moved by the SPI it names, ESP with that SPI", 0x0800, isSPI(out.SPI))
	moved.Policy.SPI, moved.SA = 0x5003, out3 // and back
	if err := fp.SetPolicy(moved); err != nil {
		t.Fatal(err)
	}
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 2011, 64, []byte("moved-back-by-spi"))))
	e.recv("moved back by the SPI it names", 0x0800, isSPI(0x5003))
	gone := p("10.1.0.0/24", "10.2.0.0/24", 17, 3003, 3003, 60, model.ActionDrop)
	fp.mu.Lock()
	installs := fp.mu.rb.installs
	fp.mu.Unlock()
	duringBuild(gone, func() error { return fp.DelPolicy(gone.Policy.PolicyID) })
	settled()
	fp.mu.Lock()
	installs = fp.mu.rb.installs - installs
	fp.mu.Unlock()
	if installs != 1 {
		// the tables built with it must have been thrown away, never in force
		t.Fatalf("%d policy tables published after a policy was deleted during their rebuild, want 1", installs)
	}

	// A policy taken out while the published tables still hold it (until
	// the next install): its SA, deleted meanwhile, is not left in them.
	out4, in4 := e.addPair(withSPI(tun, 0x5004), key)
	defer e.delSAs(in4)
	p4 := p("10.1.0.0/24", "10.2.0.0/24", 17, 3004, 3004, 60, model.ActionIPsec)
	p4.SA = out4
	if err := fp.SetPolicy(p4); err != nil {
		t.Fatal(err)
	}
	settled()
	fp.mu.Lock()
	c4 := fp.mu.sas[out4].c
	fp.mu.Unlock()
	duringBuild(p("10.1.0.0/24", "10.2.0.0/24", 17, 3005, 3005, 60, model.ActionDrop), func() error {
		if err := fp.DelPolicy(p4.Policy.PolicyID); err != nil {
			return err
		}
		if err := fp.DelSA(out4); err != nil {
			return err
		}
		fp.mu.Lock()
		defer fp.mu.Unlock()
		outs := unsafe.Slice(fp.mu.ipsec.out_sa, int(fp.mu.ipsec.n_out))
		for i := range outs {
			if outs[i] == c4 {
				return fmt.Errorf("published policy %d still points at a deleted SA", i)
			}
		}
		return nil
	})
	settled()
	e.send(frame(portMAC, vb.HardwareAddr, ipv4udp(h1, h2, 1000, 3003, 64, []byte("deleted-in-build"))))
	e.recv("a drop policy deleted during a rebuild is not in force: protected by the /16", 0x0800, isSPI(0x5003))
}
