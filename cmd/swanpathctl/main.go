// swanpathctl shows swanpathd's SAs, policies and counters, in text close
// to `ip xfrm state` / `ip xfrm policy`, or as JSON. Keys are never shown:
// swanpathd does not hand them out.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/bridge/dataplane"
)

const usage = `Usage: swanpathctl [-socket PATH] [--json] COMMAND

Commands:
  sa       list the SAs in the fast path with their counters (like ip xfrm state)
  policy   list the policies and the SA bound to each (like ip xfrm policy)
  stats    per-port counters, drops by reason
  tunnels  one line per CHILD_SA (as swanctl --list-sas groups them): SPIs,
           counters, drops, rates, crypto device, charon's names

Options:
`

func main() {
	sock := flag.String("socket", "/run/swanpath/swanpathd.sock", "swanpathd control socket")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Usage = func() {
		fmt.Fprint(os.Stderr, usage)
		flag.PrintDefaults()
	}
	// flags may come before or after the command: "swanpathctl sa --json"
	var pos []string
	args := os.Args[1:]
	for {
		if err := flag.CommandLine.Parse(args); err != nil {
			os.Exit(2)
		}
		if flag.NArg() == 0 {
			break
		}
		pos = append(pos, flag.Arg(0))
		args = flag.Args()[1:]
	}
	if len(pos) != 1 {
		flag.Usage()
		os.Exit(2)
	}
	cmd := pos[0]
	switch cmd {
	case "sa", "policy", "stats", "tunnels":
	default:
		fmt.Fprintf(os.Stderr, "swanpathctl: unknown command %q\n", cmd)
		flag.Usage()
		os.Exit(2)
	}
	rep, err := ctl.Call(*sock, cmd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "swanpathctl:", err)
		os.Exit(1)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		var v any
		switch cmd {
		case "sa":
			v = rep.SAs
		case "policy":
			v = rep.Policies
		case "stats":
			v = rep.Stats
		case "tunnels":
			v = rep.Tunnels
		}
		_ = enc.Encode(v)
		return
	}
	switch cmd {
	case "sa":
		printSAs(os.Stdout, rep.SAs)
	case "policy":
		printPolicies(os.Stdout, rep.Policies)
	case "stats":
		printStats(os.Stdout, rep.Stats)
	case "tunnels":
		printTunnels(os.Stdout, rep.Tunnels)
	}
}

func printSAs(w io.Writer, sas []ctl.SA) {
	for _, s := range sas {
		fmt.Fprintf(w, "src %s dst %s\n", s.Src, s.Dst)
		fmt.Fprintf(w, "\tproto %s spi %s reqid %d mode %s dir %s\n", s.Proto, s.SPI, s.Reqid, s.Mode, s.Dir)
		fmt.Fprintf(w, "\treplay-window %d", s.ReplayWindow)
		if s.ESN {
			fmt.Fprint(w, " flag esn")
		}
		fmt.Fprintln(w)
		if s.Aead != "" {
			fmt.Fprintf(w, "\taead %s key %d icv %d\n", s.Aead, s.KeyBits, s.ICVBits)
		}
		if s.Enc != "" {
			fmt.Fprintf(w, "\tenc %s key %d\n", s.Enc, s.KeyBits)
		}
		if s.Auth != "" {
			fmt.Fprintf(w, "\tauth-trunc %s icv %d\n", s.Auth, s.ICVBits)
		}
		if s.Encap {
			fmt.Fprintf(w, "\tencap type espinudp sport %d dport %d\n", s.SrcPort, s.DstPort)
		}
		if s.IfID != 0 || s.Mark != "" || s.Interface != "" {
			fmt.Fprint(w, "\t")
			if s.Mark != "" {
				fmt.Fprintf(w, "mark %s ", s.Mark)
			}
			if s.IfID != 0 {
				fmt.Fprintf(w, "if_id 0x%x ", s.IfID)
			}
			fmt.Fprintf(w, "interface %s\n", orNone(s.Interface))
		}
		fmt.Fprintf(w, "\tcrypto-dev %s mode %s\n", s.Crypto, s.CryptoMode)
		fmt.Fprintf(w, "\tcurrent: %d(bytes), %d(packets)", s.Bytes, s.Packets)
		if s.LastUse != "" {
			fmt.Fprintf(w, ", last use %s", s.LastUse)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "\tdrops: auth %d replay %d malformed %d policy %d\n", s.DropAuth, s.DropReplay, s.DropMalform, s.DropPolicy)
		if s.PathMTU != 0 {
			fmt.Fprintf(w, "\tpath mtu %d (learned from ICMP)\n", s.PathMTU)
		}
		fmt.Fprint(w, names(s.Conn, s.Child, s.ChildID, s.IKEID))
	}
}

func printPolicies(w io.Writer, ps []ctl.Policy) {
	for _, p := range ps {
		fmt.Fprintf(w, "src %s dst %s", p.Src, p.Dst)
		if p.Proto != 0 {
			fmt.Fprintf(w, " proto %d", p.Proto)
		}
		if p.Sport != "" {
			fmt.Fprintf(w, " sport %s", p.Sport)
		}
		if p.Dport != "" {
			fmt.Fprintf(w, " dport %s", p.Dport)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "\tdir %s priority %d", p.Dir, p.Priority)
		if p.Action != "ipsec" {
			fmt.Fprintf(w, " action %s", p.Action)
		}
		fmt.Fprintln(w)
		if p.Action == "ipsec" {
			fmt.Fprintf(w, "\ttmpl src %s dst %s\n", orAny(p.TmplSrc), orAny(p.TmplDst))
			fmt.Fprintf(w, "\t\tproto esp reqid %d mode %s", p.Reqid, p.Mode)
			if p.SPI != "" {
				fmt.Fprintf(w, " sa %s", p.SPI)
			}
			fmt.Fprintln(w)
			fmt.Fprint(w, names(p.Conn, p.Child, p.ChildID, p.IKEID))
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orAny(s string) string {
	if s == "" {
		return "0.0.0.0"
	}
	return s
}

func printStats(w io.Writer, st *ctl.Stats) {
	if st == nil || len(st.Ports) == 0 {
		return
	}
	name := "counter"
	fmt.Fprintf(w, "%-18s", name)
	for _, p := range st.Ports {
		fmt.Fprintf(w, " %14s", p.Name)
	}
	fmt.Fprintln(w)
	names := append([]string(nil), dataplane.CounterNames...)
	// counters a newer daemon has that this client does not know
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	var extra []string
	for k := range st.Ports[0].Counters {
		if !seen[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	for _, n := range append(names, extra...) {
		fmt.Fprintf(w, "%-18s", n)
		for _, p := range st.Ports {
			fmt.Fprintf(w, " %14d", p.Counters[n])
		}
		fmt.Fprintln(w)
	}
	var devs []string
	for _, p := range st.Ports {
		devs = append(devs, fmt.Sprintf("%s: %s (tap %s, %s)", p.Name, p.Device, p.Tap, p.MAC))
	}
	fmt.Fprintln(w, strings.Join(devs, "\n"))
	if l := st.Latency; l != nil && l.Frames > 0 {
		fmt.Fprintf(w, "latency in the fast path (receive to wire transmit queue), %d frames since start: median %s, p99 %s\n",
			l.Frames, time.Duration(l.MedianNS), time.Duration(l.P99NS))
	}
}
