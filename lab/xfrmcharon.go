package lab

import (
	"context"
	"fmt"
)

// XFRMCharonGateway is a lab whose gateway is a kernel host (this
// machine's root: Options.KernelGatewayRoot = "/") running Debian's charon
// with kernel-netlink — not the kernel-swanpath plugin — and swanpathd
// with the XFRM mirror: charon installs its SAs and policies in the
// kernel's XFRM as on any Linux gateway, swanpathd mirrors them into the
// fast path (the thesis gateway's set-up). The peer is the lab's usual
// charon with kernel-libipsec in pr.
type XFRMCharonGateway struct {
	D  *Swanpathd
	GW *Charon
	PR *Charon
	l  *Lab
}

// Diagnose is XFRMGateway.Diagnose for this gateway (charon in pluto's
// place: its log is the lab's, kept for a failing test).
func (g *XFRMCharonGateway) Diagnose() string {
	return (&XFRMGateway{D: g.D, PR: g.PR, l: g.l}).Diagnose()
}

// StartXFRMCharonGateway starts swanpathd (source.kind = "xfrm") on the
// kernel host gw, puts the gateway's addresses on its TAPs, starts the
// peer with tun, then the gateway's charon with only the base plugins
// (kernel-netlink is its kernel-ipsec) and tun.GatewayConf(), and
// initiates the CHILD_SA; it returns once both sides have it.
func (l *Lab) StartXFRMCharonGateway(ctx context.Context, bin, ctlBin string, tun Tunnel) (*XFRMCharonGateway, error) {
	if _, ok := l.Host(GW).(*UML); !ok {
		return nil, fmt.Errorf("xfrm charon gateway: gw is %T, not a kernel host (Options.KernelGatewayRoot)", l.Host(GW))
	}
	d, pr, err := l.startXFRMSwanpathd(ctx, bin, ctlBin, tun)
	if d == nil {
		return nil, err
	}
	g := &XFRMCharonGateway{D: d, PR: pr, l: l}
	if err != nil {
		return g, err
	}
	// no Plugins: the base set, whose kernel-netlink is then charon's
	// kernel-ipsec as well as its kernel-net (load_modular loads no
	// other plugin, kernel-swanpath included, even where it is installed)
	g.GW, err = l.StartCharon(GW, CharonOptions{Swanctl: tun.GatewayConf(), Settings: tun.GatewayCharonSettings})
	if err != nil {
		return g, err
	}
	if err := g.GW.LoadAll(ctx); err != nil {
		return g, err
	}
	if err := g.GW.Initiate(ctx, ChildName); err != nil {
		return g, err
	}
	if _, err := g.GW.WaitEstablished(ctx, ChildName); err != nil {
		return g, err
	}
	_, err = g.PR.WaitEstablished(ctx, ChildName)
	return g, err
}
