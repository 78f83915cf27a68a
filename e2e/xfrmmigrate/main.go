// xfrmmigrate sends one XFRM_MSG_MIGRATE request to the kernel, as an IKE
// daemon does for MOBIKE (iproute2 has no command for it), for
// TestXFRMMirrorMigrate: the policy of -sel in direction -dir and the SAs
// of -move go to their new endpoints, ESP-in-UDP with -encap.
//
//	xfrmmigrate -sel 10.9.1.0/24,10.9.2.0/24 -dir out \
//		-move OLDSRC,OLDDST,NEWSRC,NEWDST,REQID [-encap 4500,4500]
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink/nl"

	"github.com/swanpath/swanpath/bridge/xfrm"
)

func main() {
	sel := flag.String("sel", "", "selector: SRC-PREFIX,DST-PREFIX")
	dir := flag.String("dir", "out", "direction: in, out or fwd")
	move := flag.String("move", "", "OLDSRC,OLDDST,NEWSRC,NEWDST,REQID (ESP, tunnel mode)")
	encap := flag.String("encap", "", "SPORT,DPORT: the migrated SAs are ESP-in-UDP")
	flag.Parse()
	if err := run(*sel, *dir, *move, *encap); err != nil {
		fmt.Fprintln(os.Stderr, "xfrmmigrate:", err)
		os.Exit(1)
	}
}

func run(sel, dir, move, encap string) error {
	s := strings.Split(sel, ",")
	m := strings.Split(move, ",")
	if len(s) != 2 || len(m) != 5 {
		return fmt.Errorf("want -sel SRC,DST and -move OLDSRC,OLDDST,NEWSRC,NEWDST,REQID")
	}
	src, err := netip.ParsePrefix(s[0])
	if err != nil {
		return err
	}
	dst, err := netip.ParsePrefix(s[1])
	if err != nil {
		return err
	}
	var addrs [4]netip.Addr
	for i := range addrs {
		if addrs[i], err = netip.ParseAddr(m[i]); err != nil {
			return err
		}
	}
	reqid, err := strconv.ParseUint(m[4], 10, 32)
	if err != nil {
		return err
	}
	d, ok := map[string]uint8{"in": 0, "out": 1, "fwd": 2}[dir]
	if !ok {
		return fmt.Errorf("direction %q", dir)
	}
	var sport, dport uint64
	if encap != "" {
		e := strings.Split(encap, ",")
		if len(e) != 2 {
			return fmt.Errorf("want -encap SPORT,DPORT")
		}
		if sport, err = strconv.ParseUint(e[0], 10, 16); err != nil {
			return err
		}
		if dport, err = strconv.ParseUint(e[1], 10, 16); err != nil {
			return err
		}
	}
	mv := xfrm.Move{OldSrc: addrs[0], OldDst: addrs[1], NewSrc: addrs[2], NewDst: addrs[3], Proto: 50, Mode: 1, Reqid: uint32(reqid)}
	req := xfrm.MigrateRequest(src, dst, d, []xfrm.Move{mv}, encap != "", uint16(sport), uint16(dport))
	c, err := xfrm.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Do(nl.XFRM_MSG_MIGRATE, 0, req); err != nil {
		return fmt.Errorf("XFRM_MSG_MIGRATE: %w", err)
	}
	return nil
}
