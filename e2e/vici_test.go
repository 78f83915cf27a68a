package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/lab"
)

// tunnels is `swanpathctl tunnels --json`, decoded.
func tunnels(ctx context.Context, d *lab.Swanpathd) ([]ctl.Tunnel, error) {
	out, err := d.Ctl(ctx, "tunnels", "--json")
	if err != nil {
		return nil, err
	}
	var ts []ctl.Tunnel
	if err := json.Unmarshal([]byte(out), &ts); err != nil {
		return nil, fmt.Errorf("swanpathctl tunnels --json: %w: %q", err, out)
	}
	return ts, nil
}

// waitTunnelOf polls until `swanpathctl tunnels` lists charon's installed
// CHILD_SA "net" under its names and SPIs, and returns both views.
func waitTunnelOf(t *testing.T, ctx context.Context, g *gateway) (ctl.Tunnel, lab.IKESA, lab.ChildSA) {
	t.Helper()
	var tun ctl.Tunnel
	var ike lab.IKESA
	var child lab.ChildSA
	err := waitFor(ctx, "swanpathctl tunnels naming charon's CHILD_SA", func() (bool, error) {
		sas, err := g.gw.ListSAs(ctx)
		if err != nil {
			return false, err
		}
		var ok bool
		ike, child, ok = lab.Child(sas, "net")
		if !ok {
			return false, fmt.Errorf("charon has no installed CHILD_SA net")
		}
		ts, err := tunnels(ctx, g.d)
		if err != nil {
			return false, err
		}
		for _, x := range ts {
			if x.SPIIn == "0x"+child.SPIIn && x.SPIOut == "0x"+child.SPIOut {
				tun = x
				return x.Child == "net" && x.Conn == ike.Name && fmt.Sprint(x.ChildID) == child.UniqueID &&
						fmt.Sprint(x.IKEID) == ike.UniqueID && x.Remote == ike.RemoteHost,
					fmt.Errorf("tunnel without charon's names: %+v (charon: %s %+v)", x, ike.Name, child)
			}
		}
		return false, fmt.Errorf("no tunnel with SPIs %s/%s: %+v", child.SPIIn, child.SPIOut, ts)
	})
	if err != nil {
		t.Fatal(err)
	}
	return tun, ike, child
}

// TestViciNames: swanpathd restarted under a running charon, now with
// charon's VICI socket configured: the SAs the plugin replays get their
// names (connection, CHILD_SA name and id, IKE_SA id, remote) in
// `swanpathctl sa`, `policy` and `tunnels`; the tunnel's counters agree
// with `swanctl --list-sas` (which reads them from swanpathd through the
// plugin) after traffic; after a rekey the tunnel shows the new SPIs.
func TestViciNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	g := start(t, ctx, lab.Options{}, lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true})
	warmUp(t, ctx, g)

	// the lab's swanpathd does not know charon's VICI socket: give it and
	// restart swanpathd under the running charon
	f, err := os.OpenFile(g.d.Conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "\n[vici]\nsocket = %q\n", g.gw.VICISocket())
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.d.Stop(); err != nil {
		t.Logf("stop swanpathd: %v", err)
	}
	if err := g.d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitTunnelOf(t, ctx, g)
	g.pingBothWays(t, ctx, 1)

	sas, err := g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sas {
		if s.Child != "net" || s.Conn == "" || s.ChildID == 0 || s.IKEID == 0 {
			t.Errorf("replayed SA %s %s without names: %+v", s.Dir, s.SPI, s)
		}
	}
	out, err := g.d.Ctl(ctx, "policy")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ": net{") {
		t.Errorf("swanpathctl policy shows no CHILD_SA names:\n%s", out)
	}

	// counters: swanctl reads them from swanpathd through query_sa
	g.pingBothWays(t, ctx, 20)
	tun, _, child := waitTunnelOf(t, ctx, g)
	if !within(tun.In.Packets, child.PacketsIn, 2) || !within(tun.Out.Packets, child.PacketsOut, 2) ||
		!within(tun.In.Bytes, child.BytesIn, 300) || !within(tun.Out.Bytes, child.BytesOut, 300) {
		t.Errorf("tunnel in %d/%d out %d/%d (packets/bytes), swanctl in %d/%d out %d/%d",
			tun.In.Packets, tun.In.Bytes, tun.Out.Packets, tun.Out.Bytes,
			child.PacketsIn, child.BytesIn, child.PacketsOut, child.BytesOut)
	}
	if tun.In.Packets < 20 || tun.Out.Packets < 20 {
		t.Errorf("tunnel counted %d in, %d out after 20 pings each way", tun.In.Packets, tun.Out.Packets)
	}
	if tun.Crypto == "" || tun.CryptoMode == "" || tun.In.Drops == nil {
		t.Errorf("tunnel without crypto device, mode or drops: %+v", tun)
	}

	// rekey: the row follows the new CHILD_SA's SPIs
	if _, err := g.gw.Swanctl(ctx, "--rekey", "--child", "net"); err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, "a new CHILD_SA", func() (bool, error) {
		sas, err := g.gw.ListSAs(ctx)
		if err != nil {
			return false, err
		}
		_, c, ok := lab.Child(sas, "net")
		return ok && c.SPIIn != child.SPIIn, fmt.Errorf("still %s", child.SPIIn)
	})
	if err != nil {
		t.Fatal(err)
	}
	newTun, _, newChild := waitTunnelOf(t, ctx, g)
	if newTun.SPIIn != "0x"+newChild.SPIIn || newChild.SPIIn == child.SPIIn {
		t.Errorf("after rekey: tunnel %s, charon %s (was %s)", newTun.SPIIn, newChild.SPIIn, child.SPIIn)
	}
	if !strings.Contains(g.d.Output(), "VICI") {
		t.Logf("swanpathd output:\n%s", g.d.Output())
	}
}
