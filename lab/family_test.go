package lab

import (
	"strings"
	"testing"
)

// TestTunnelFamilies: Outer picks the IKE/ESP endpoints, Inner the traffic
// selectors, mirrored between the gateway's and the peer's swanctl.conf;
// the kernel-libipsec peer always asks for UDP encapsulation, a swanpath
// peer only with Encap; families a lab cannot carry are refused.
func TestTunnelFamilies(t *testing.T) {
	for _, tc := range []struct {
		outer, inner Family
		gwAddr       string // gw's outer address, then the peer's
		prAddr       string
		gwTS, prTS   string // behind gw, behind the peer
	}{
		{FamilyV4, FamilyV4, "192.0.2.1", "192.0.2.2", "10.1.0.0/24", "10.2.0.0/24"},
		{FamilyV6, FamilyV6, "fd00:192::1", "fd00:192::2", "fd00:1::/64", "fd00:2::/64"},
		{FamilyV6, FamilyV4, "fd00:192::1", "fd00:192::2", "10.1.0.0/24", "10.2.0.0/24"},
		{FamilyV4, FamilyDual, "192.0.2.1", "192.0.2.2", "10.1.0.0/24,fd00:1::/64", "10.2.0.0/24,fd00:2::/64"},
	} {
		t.Run(tc.outer.String()+"-"+tc.inner.String(), func(t *testing.T) {
			tun := Tunnel{Outer: tc.outer, Inner: tc.inner}
			gw, pr, spr := tun.GatewayConf(), tun.PeerConf(), tun.SwanpathPeerConf()
			for _, c := range []struct {
				name, conf, encap string
				local, remote     string // addresses
				localTS, remoteTS string
			}{
				{"gateway", gw, "no", tc.gwAddr, tc.prAddr, tc.gwTS, tc.prTS},
				{"peer", pr, "yes", tc.prAddr, tc.gwAddr, tc.prTS, tc.gwTS},
				{"swanpath peer", spr, "no", tc.prAddr, tc.gwAddr, tc.prTS, tc.gwTS},
			} {
				for _, want := range []string{
					"\t\tlocal_addrs = " + c.local + "\n", "\t\tremote_addrs = " + c.remote + "\n",
					"\t\t\t\tlocal_ts = " + c.localTS + "\n", "\t\t\t\tremote_ts = " + c.remoteTS + "\n",
					"\t\tencap = " + c.encap + "\n",
				} {
					if !strings.Contains(c.conf, want) {
						t.Errorf("%s swanctl.conf lacks %q:\n%s", c.name, want, c.conf)
					}
				}
			}
			if err := tun.check(true); err != nil {
				t.Errorf("refused in a lab with IPv6: %v", err)
			}
			if err := tun.check(false); (err == nil) != (tc.outer == FamilyV4 && tc.inner == FamilyV4) {
				t.Errorf("in a lab without IPv6: %v", err)
			}
		})
	}
	if !strings.Contains(Tunnel{Encap: true}.SwanpathPeerConf(), "encap = yes\n") {
		t.Error("swanpath peer ignores Encap")
	}
	if err := (Tunnel{Outer: FamilyDual}).check(true); err == nil {
		t.Error("dual-stack outer addresses accepted")
	}
}
