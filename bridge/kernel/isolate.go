package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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
		// a kernel without nftables' netdev family (Debian's
		// user-mode Linux): tc's ingress hook, which AF_PACKET also
		// sees before
		if terr := isolateTC(ifname); terr != nil {
			return fmt.Errorf("isolate %s: netdev ingress chain: %w; tc ingress drop: %v", ifname, err, terr)
		}
	}
	p := filepath.Join("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("isolate %s: disable IPv6: %w", ifname, err)
	}
	return nil
}

// isolateTC drops every frame at ifname's tc ingress hook (clsact, a
// matchall filter with action drop): Isolate where nftables has no
// netdev family.
func isolateTC(ifname string) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	idx := link.Attrs().Index
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0),
		Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscReplace(q); err != nil {
		return fmt.Errorf("clsact qdisc: %w", err)
	}
	f := &netlink.MatchAll{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS,
		Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions: []netlink.Action{&netlink.GenericAction{ActionAttrs: netlink.ActionAttrs{Action: netlink.TC_ACT_SHOT}}}}
	err = netlink.FilterReplace(f)
	if errors.Is(err, unix.EEXIST) && hasDropAll(link) {
		// an earlier run's (it stays after swanpathd exits): matchall
		// filters cannot be changed, only deleted, which would let the
		// kernel have the port's frames for a moment
		return nil
	}
	if err != nil {
		return fmt.Errorf("matchall drop filter: %w", err)
	}
	return nil
}

// hasDropAll says whether link's tc ingress has isolateTC's filter: a
// matchall at priority 1 whose action drops.
func hasDropAll(link netlink.Link) bool {
	fs, err := netlink.FilterList(link, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return false
	}
	for _, f := range fs {
		m, ok := f.(*netlink.MatchAll)
		if !ok || m.Priority != 1 {
			continue
		}
		for _, a := range m.Actions {
			if a.Attrs().Action == netlink.TC_ACT_SHOT {
				return true
			}
		}
	}
	return false
}
