package lab

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestFromOptionsRejectsNATWithIPv6OrSwanpathPeer(t *testing.T) {
	for _, o := range []Options{{NAT: true, IPv6: true}, {NAT: true, SwanpathPeer: true}} {
		if _, err := FromOptions(o); !errors.Is(err, ErrOptions) {
			t.Errorf("FromOptions(%+v) = %v, want ErrOptions", o, err)
		}
	}
	for _, o := range []Options{{}, {GatewayAddrs: true}, {NAT: true}, {IPv6: true, SwanpathPeer: true}} {
		if _, err := FromOptions(o); err != nil {
			t.Errorf("FromOptions(%+v): %v", o, err)
		}
	}
}

func TestFromOptionsShape(t *testing.T) {
	top, err := FromOptions(Options{NAT: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(top.roles(), " "); got != "h1 gw nr pr h2" {
		t.Errorf("roles %q", got)
	}
	gw, _ := top.router(GW)
	pr, _ := top.router(PR)
	if !gw.Deferred || pr.Deferred || pr.WanAddrs[0].Addr().String() != PRNatAddr ||
		len(gw.Defaults) != 1 || gw.Defaults[0].String() != PRWanAddr || pr.Defaults[0].String() != NRInsideAddr {
		t.Errorf("routers: gw %+v, pr %+v", gw, pr)
	}
	top, _ = FromOptions(Options{IPv6: true, SwanpathPeer: true})
	if pr, _ := top.router(PR); !pr.Deferred || len(pr.WanAddrs) != 2 || len(pr.Defaults) != 0 {
		t.Errorf("swanpath peer with IPv6: %+v", pr)
	}
}

// Validate reports every problem at once.
func TestTopologyValidate(t *testing.T) {
	top := Topology{
		Hosts:   []HostSpec{{Role: "a"}, {Role: "a"}, {Role: "B"}},
		Links:   []Link{{A: End{"a", "x"}, B: End{"zz", "y"}, MTU: 20}, {A: End{"a", "x"}, B: End{"a", "an-interface-name"}}},
		Addrs:   []Addr{{End{"a", "nope"}, netip.MustParsePrefix("10.0.0.1/24")}},
		Routers: []Router{{Role: "a", Lan: End{"a", "x"}, Wan: End{"a", "x"}}},
		NAT:     &NAT{Host: "a", Out: "x", PortLo: 2, PortHi: 1},
	}
	err := top.Validate()
	if err == nil {
		t.Fatal("invalid topology accepted")
	}
	for _, want := range []string{`host "a": twice`, `host "B"`, `no host "zz"`, "MTU 20", "interface on two links",
		"1 to 15 characters", "no such link end", `router "a": no such host, or it does not forward`, `router "a": no WAN address`, "NAT on"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// The middlebox sits on the WAN between gw and pr, its far link has the
// MTU asked for, and the peer keeps its address; not with NAT or IPv6.
func TestFromOptionsMiddlebox(t *testing.T) {
	mb := &MiddleboxOptions{FarMTU: 1400, DropFrags: 30}
	top, err := FromOptions(Options{Middlebox: mb})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(top.roles(), " "); got != "h1 gw mb pr h2" {
		t.Errorf("roles %q", got)
	}
	m := top.Middlebox
	if m == nil || m.DropFrags != 30 || m.Addr.String() != MBAddr {
		t.Fatalf("middlebox %+v", m)
	}
	far := 0
	for _, lk := range top.Links {
		if lk.A == (End{MB, m.Far}) && lk.B == (End{PR, PRWan}) {
			far = lk.MTU
		}
	}
	if far != 1400 {
		t.Errorf("far link MTU %d, want 1400", far)
	}
	if pr, _ := top.router(PR); pr.WanAddrs[0].Addr().String() != PRWanAddr {
		t.Errorf("peer %+v", pr)
	}
	for _, o := range []Options{{Middlebox: mb, NAT: true}, {Middlebox: mb, IPv6: true}} {
		if _, err := FromOptions(o); !errors.Is(err, ErrOptions) {
			t.Errorf("FromOptions(%+v) = %v, want ErrOptions", o, err)
		}
	}
	if _, err := FromOptions(Options{Middlebox: &MiddleboxOptions{DropFrags: 101}}); err == nil {
		t.Error("a drop share of 101% taken")
	}
}
