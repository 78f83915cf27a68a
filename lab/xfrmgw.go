package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/swanpath/swanpath/internal/swanpathdconf"
)

// NewXFRMSwanpathd writes the configuration of swanpathd on the kernel
// host gw (Options.KernelGatewayRoot) with source.kind = "xfrm": it
// mirrors the SAs and policies pluto installs in that kernel's XFRM. DPDK
// runs without hugepages (the UML kernel has none) and without shared
// configuration, main and worker lcore on the instance's one CPU; the
// ports are net_af_packet on the instance's lan and wan, the TAPs tlan and
// twan. bin and ctlBin are paths of this machine (reached inside through
// UMLHostDir); the sockets and the state file are in the instance's /run.
func (l *Lab) NewXFRMSwanpathd(bin, ctlBin string) (*Swanpathd, error) {
	return l.newKernelSwanpathd(GW, bin, ctlBin, swanpathdconf.Config{
		Ports: []swanpathdconf.Port{
			{Name: "lan", Device: "net_af_packet0,iface=" + GWLan, Tap: GWLanTap},
			{Name: "wan", Device: "net_af_packet1,iface=" + GWWan, Tap: GWWanTap},
		},
		Source: swanpathdconf.Source{Kind: "xfrm"},
	}, "swanpath lab (xfrm gateway)")
}

// newKernelSwanpathd writes the configuration of swanpathd on kernel host
// role: conf's ports, source and interfaces, and the lab's settings for a
// kernel host (NewXFRMSwanpathd).
func (l *Lab) newKernelSwanpathd(role, bin, ctlBin string, conf swanpathdconf.Config, title string) (*Swanpathd, error) {
	u, ok := l.Host(role).(*UML)
	if !ok {
		return nil, fmt.Errorf("swanpathd on %s: %T, not a kernel host", role, l.Host(role))
	}
	// the TAPs; nftables for swanpathd's netdev ingress chain that
	// isolates its ports from the kernel
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range []string{"tun", "nf_tables"} {
		if _, err := u.Exec(ctx, "/run/uml/modprobe", m); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "spdx")
	if err != nil {
		return nil, err
	}
	l.t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "swanpathd.toml")
	d := &Swanpathd{l: l, role: role, Bin: u.HostPath(bin), CtlBin: u.HostPath(ctlBin), Conf: u.HostPath(path),
		Plugin: "/run/swanpath/charon.sock", Control: "/run/swanpath/ctl.sock"}
	conf.EAL = swanpathdconf.EAL{Lcores: "0@0,1@0", Memory: 512, FilePrefix: l.prefix + "-" + role, NoHuge: true}
	conf.Plugin = swanpathdconf.Socket{Socket: d.Plugin}
	conf.Control = swanpathdconf.Socket{Socket: d.Control}
	// one CPU for the worker, the IKE daemon and the kernel
	if conf.Fastpath.IdleSleepUS == 0 {
		conf.Fastpath.IdleSleepUS = 50
	}
	conf.Fastpath.MaxSAs, conf.Fastpath.StateFile = 1024, "/run/swanpath/outbound-seq.json"
	conf.Log = swanpathdconf.Log{Level: "debug"}
	b, err := conf.Render(title)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, err
	}
	return d, nil
}

// waitReadyKernel is WaitReady for swanpathd on a kernel host: its control
// socket is inside, so swanpathctl asks there.
func (d *Swanpathd) waitReadyKernel(ctx context.Context) error {
	p := d.proc
	err := PollFor(ctx, "swanpathd ready", 90*time.Second, 200*time.Millisecond, func() (bool, error) {
		select {
		case <-p.Done():
			return false, Abort(fmt.Errorf("swanpathd exited during start:\n%s", p.Tail(60)))
		default:
		}
		_, err := d.Ctl(ctx, "stats")
		return err == nil, err
	})
	if err != nil && !isDone(p) {
		return fmt.Errorf("swanpathd did not become ready: %w\n%s", err, p.Tail(60))
	}
	return err
}

// XFRMGateway is a lab whose gateway is a kernel host running libreswan's
// pluto and swanpathd with the XFRM mirror, facing the lab's peer (Debian's
// charon with kernel-libipsec in pr, or with kernel-netlink on a kernel
// host with Options.KernelPeer).
type XFRMGateway struct {
	D     *Swanpathd
	Pluto *Pluto
	PR    *Charon
	l     *Lab
}

// StartXFRMGateway starts swanpathd on gw, puts the gateway's addresses on
// its TAPs, starts the peer's charon with tun (the peer's side) and pluto
// with conn, and brings the connection up with `ipsec auto --up`.
func (l *Lab) StartXFRMGateway(ctx context.Context, bin, ctlBin string, conn LibreswanConn, tun Tunnel) (*XFRMGateway, error) {
	d, pr, err := l.startXFRMSwanpathd(ctx, bin, ctlBin, tun)
	if d == nil {
		return nil, err
	}
	g := &XFRMGateway{D: d, PR: pr, l: l}
	if err != nil {
		return g, err
	}
	if g.Pluto, err = l.StartPluto(ctx, GW, conn); err != nil {
		return g, err
	}
	if err := g.Pluto.Up(ctx); err != nil {
		return g, err
	}
	_, err = g.PR.WaitEstablished(ctx, ChildName)
	return g, err
}

// startXFRMSwanpathd is how both XFRM gateways begin: swanpathd with the
// XFRM mirror started on gw, the gateway's addresses on its TAPs, then the
// peer's charon with tun. d is nil only when swanpathd could not be set
// up; on an error, what did start is returned with it.
func (l *Lab) startXFRMSwanpathd(ctx context.Context, bin, ctlBin string, tun Tunnel) (d *Swanpathd, pr *Charon, err error) {
	if d, err = l.NewXFRMSwanpathd(bin, ctlBin); err != nil {
		return nil, nil, err
	}
	if err = d.Start(ctx); err != nil {
		return d, nil, err
	}
	if err = l.ConfigureGateway(GWLanTap, GWWanTap); err != nil {
		return d, nil, err
	}
	pr, err = l.StartPeer(ctx, tun)
	return d, pr, err
}
