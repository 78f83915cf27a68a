package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// Release undoes what swanpathd did to the machine's interfaces, for a
// package that is being removed: the nftables table of Isolate goes (all
// its chains with it), IPv6 comes back on the ports' interfaces, and the
// persistent TAPs are deleted (with the addresses and routes on them).
// What is already gone is no error.
func Release(ifaces, taps []string) error {
	var errs []error
	c, err := nftables.New()
	if err != nil {
		errs = append(errs, fmt.Errorf("release: nftables: %w", err))
	} else {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyNetdev)
		if err != nil {
			errs = append(errs, fmt.Errorf("release: list nftables tables: %w", err))
		}
		for _, t := range tables {
			if t.Name == isolateTable {
				c.DelTable(t)
				if err := c.Flush(); err != nil {
					errs = append(errs, fmt.Errorf("release: delete nftables table %s: %w", isolateTable, err))
				}
			}
		}
	}
	for _, ifname := range ifaces {
		p := filepath.Join("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
		if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("release %s: enable IPv6: %w", ifname, err))
		}
	}
	for _, name := range taps {
		l, err := netlink.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				continue
			}
			errs = append(errs, fmt.Errorf("release: TAP %s: %w", name, err))
			continue
		}
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("release: delete TAP %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
