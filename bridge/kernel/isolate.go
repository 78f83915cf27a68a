package kernel

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/nftables"
)

// isolateTable is the nftables netdev table that holds one ingress chain
// per interface the fast path reads through AF_PACKET.
const isolateTable = "swanpath"

// Isolate keeps the kernel's own stack off an interface whose frames the
// fast path takes with AF_PACKET (net_af_packet, net_pcap): the kernel
// would otherwise also receive every frame — answer ARP for the gateway's
// addresses, hand ESP-in-UDP to charon's socket, forward or reject
// plaintext with ICMP — next to the fast path. AF_PACKET sockets see a
// frame before the netdev ingress hook, so a drop-all ingress chain there
// leaves the fast path's view intact; IPv6 is switched off on the interface
// so the kernel sends nothing from it either. The gateway's addresses live
// on the TAP interfaces. Idempotent; the chain stays after swanpathd exits
// (the port has no one to serve it then).
func Isolate(ifname string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("isolate %s: nftables: %w", ifname, err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyNetdev, Name: isolateTable})
	name := "in-" + ifname
	// drop a chain left by an earlier run (its device may be gone); the
	// error for a missing chain is expected and ignored
	c.DelChain(&nftables.Chain{Table: t, Name: name})
	_ = c.Flush()

	t = c.AddTable(&nftables.Table{Family: nftables.TableFamilyNetdev, Name: isolateTable})
	drop := nftables.ChainPolicyDrop
	c.AddChain(&nftables.Chain{
		Name:     name,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookIngress,
		Priority: nftables.ChainPriorityFilter,
		Device:   ifname,
		Policy:   &drop,
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("isolate %s: netdev ingress chain: %w", ifname, err)
	}
	p := filepath.Join("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("isolate %s: disable IPv6: %w", ifname, err)
	}
	return nil
}
