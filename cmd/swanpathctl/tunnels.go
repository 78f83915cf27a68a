package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/swanpath/swanpath/bridge/ctl"
)

// printTunnels prints one CHILD_SA per paragraph, named as `swanctl
// --list-sas` names it: connection, CHILD_SA name and unique id, IKE_SA,
// remote, then both SPIs with the fast path's counters, drops and rates.
func printTunnels(w io.Writer, ts []ctl.Tunnel) {
	for _, t := range ts {
		name := "(no name: VICI has not listed it)"
		if t.Child != "" {
			name = fmt.Sprintf("%s: %s{%d}, IKE_SA #%d, remote %s [%s]", t.Conn, t.Child, t.ChildID, t.IKEID, t.Remote, t.RemoteID)
		}
		fmt.Fprintln(w, name)
		state := t.State
		if state == "" {
			state = "-"
		}
		fmt.Fprintf(w, "  %s, reqid %d, %s, crypto-dev %s mode %s\n", state, t.Reqid, strings.ToLower(t.Mode), t.Crypto, t.CryptoMode)
		printTunnelDir(w, "in ", t.SPIIn, t.In)
		printTunnelDir(w, "out", t.SPIOut, t.Out)
	}
}

func printTunnelDir(w io.Writer, dir, spi string, d ctl.TunnelDir) {
	if spi == "" {
		fmt.Fprintf(w, "  %s (none)\n", dir)
		return
	}
	fmt.Fprintf(w, "  %s %s: %d bytes, %d packets, %.0f bytes/s, %.0f packets/s", dir, spi, d.Bytes, d.Packets, d.BytesPerSec, d.PacketsPerSec)
	var reasons []string
	for r := range d.Drops {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	var drops []string
	for _, r := range reasons {
		if d.Drops[r] != 0 {
			drops = append(drops, fmt.Sprintf("%s %d", r, d.Drops[r]))
		}
	}
	if len(drops) > 0 {
		fmt.Fprintf(w, ", drops: %s", strings.Join(drops, ", "))
	}
	fmt.Fprintln(w)
}

// names is the names part of an SA's or policy's text, "" without names.
func names(conn, child string, childID, ikeID uint32) string {
	if child == "" {
		return ""
	}
	return fmt.Sprintf("\tchild %s: %s{%d} ike #%d\n", conn, child, childID, ikeID)
}
