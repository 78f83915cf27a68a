// Command swanpath-insn counts the instructions the fast path spends per
// packet, which, unlike a packet rate, does not depend on what else the
// machine runs. It starts swanpathd as the benchmark does (net_pcap with
// infinite_rx into net_null, the case's SAs through the plugin socket) but
// under valgrind's callgrind, turns collection on once packets flow, runs a
// few seconds, dumps, and divides every function's exclusive instruction
// count by the packets of the same dump (the calls of net_null's per-packet
// free, so both come from one window).
//
//	go run ./bench/cmd/swanpath-insn -swanpathd bin/swanpathd -case out-gcm128-64-1sa
//
// Needs root (namespaces, EAL) and valgrind. Under valgrind 3.19 the Go
// runtime must not use RDTSCP (valgrind has no such instruction) nor
// preempt goroutines by signal (callgrind's signal bookkeeping trips on it):
// GODEBUG turns both off. ipsec-mb runs its AVX2 code there (valgrind's
// CPUID shows no AVX-512).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/swanpath/swanpath/bench/sut"
	"github.com/swanpath/swanpath/bench/traffic"
	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/bridge/pluginsock"
)

type options struct {
	swanpathd string
	cases     string
	pmd       string
	mode      string
	lcores    string
	seconds   time.Duration
	perPacket string
	keep      string
	top       int
	dump      string
	sim       bool
}

func main() {
	var o options
	flag.StringVar(&o.swanpathd, "swanpathd", "bin/swanpathd", "swanpathd binary")
	flag.StringVar(&o.cases, "case", "out-gcm128-64-1sa,in-gcm128-64-1sa", "comma-separated cases: DIR-SUITE-MIX-1sa[-udp] (DIR out or in, MIX 64, imix or 1420)")
	flag.StringVar(&o.pmd, "pmd", "aesni_gcm", "swanpathd's crypto.pmd")
	flag.StringVar(&o.mode, "mode", "cpu", "swanpathd's crypto.mode")
	flag.StringVar(&o.lcores, "lcores", "0,1", "EAL lcores: main, then the worker")
	flag.DurationVar(&o.seconds, "window", 20*time.Second, "collection window")
	flag.StringVar(&o.perPacket, "per-packet", "", "regexp of a function called once per packet whose calls count the packets, or tx for the tx counter (default: net_null's per-packet free)")
	flag.StringVar(&o.keep, "keep", "", "directory to keep the callgrind output in (callgrind_annotate it for lines)")
	flag.IntVar(&o.top, "top", 25, "functions listed per case")
	flag.BoolVar(&o.sim, "sim", false, "also simulate caches and branch prediction (--cache-sim --branch-sim): misses and mispredictions per packet")
	flag.StringVar(&o.dump, "dump", "", "only report on this callgrind output of an earlier run (-keep)")
	flag.Parse()
	if o.dump != "" {
		if err := report(o, filepath.Base(o.dump), o.dump, 0, nil); err != nil {
			fail(err)
		}
		return
	}
	if os.Geteuid() != 0 {
		fail(fmt.Errorf("needs root"))
	}
	for _, c := range strings.Split(o.cases, ",") {
		if err := runCase(o, strings.TrimSpace(c)); err != nil {
			fail(fmt.Errorf("%s: %w", c, err))
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "swanpath-insn:", err)
	os.Exit(1)
}

// parseCase reads DIR-SUITE-MIX-1sa[-udp].
func parseCase(s string) (inbound bool, suite traffic.Suite, mix traffic.Mix, encap bool, err error) {
	f := strings.Split(s, "-")
	if len(f) < 4 || (f[0] != "in" && f[0] != "out") || f[3] != "1sa" || (len(f) == 5 && f[4] != "udp") || len(f) > 5 {
		return false, suite, mix, false, fmt.Errorf("case %q: want DIR-SUITE-MIX-1sa[-udp]", s)
	}
	var ok bool
	if suite, ok = traffic.SuiteByName(f[1]); !ok {
		return false, suite, mix, false, fmt.Errorf("unknown suite %q", f[1])
	}
	if mix, ok = traffic.MixByName(f[2]); !ok {
		return false, suite, mix, false, fmt.Errorf("unknown mix %q", f[2])
	}
	return f[0] == "in", suite, mix, len(f) == 5, nil
}

func runCase(o options, name string) error {
	inbound, suite, mix, encap, err := parseCase(name)
	if err != nil {
		return err
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("/tmp", "spinsn")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	plan, err := traffic.NewPlan(suite, 1, encap)
	if err != nil {
		return err
	}
	pcap := filepath.Join(dir, "case.pcap")
	if _, err := plan.Pcap(pcap, mix, inbound); err != nil {
		return err
	}
	bin, err := filepath.Abs(o.swanpathd)
	if err != nil {
		return err
	}
	out := filepath.Join(dir, "callgrind.out")
	wrap := filepath.Join(dir, "swanpathd")
	vglog := filepath.Join(dir, "valgrind.log")
	script := fmt.Sprintf("#!/bin/sh\nGODEBUG=cpu.rdtscp=off,asyncpreemptoff=1 exec valgrind --tool=callgrind %s--instr-atstart=no --log-file=%s --callgrind-out-file=%s %s \"$@\" 2>%s\n", simArgs(o.sim), vglog, out, bin, filepath.Join(dir, "swanpathd.log"))
	if err := os.WriteFile(wrap, []byte(script), 0o755); err != nil {
		return err
	}
	pcapDev := fmt.Sprintf("net_pcap0,rx_pcap=%s,infinite_rx=1", pcap)
	nullDev := "net_null0,no-rx=1"
	cfg := sut.SwanpathdConfig{Bin: wrap, Lcores: o.lcores, MemoryMB: 256, CryptoPMD: o.pmd, CryptoMode: o.mode,
		FilePrefix: fmt.Sprintf("spinsn%d", os.Getpid()), Lan: pcapDev, Wan: nullDev, MaxSAs: 1025}
	port := "wan"
	if inbound {
		cfg.Lan, cfg.Wan, port = nullDev, pcapDev, "lan"
	}
	fmt.Fprintf(os.Stderr, "%s: starting swanpathd under callgrind\n", name)
	d, err := sut.StartSwanpathd(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%w\n%s\n%s", err, tail(filepath.Join(dir, "swanpathd.log")), tail(vglog))
	}
	defer d.Close()
	// HELLO, then the end of an empty replay, which a swanpathd older
	// than REPLAY_DONE (an old commit under comparison) does not know
	c, err := pluginsock.DialReplay(ctx, d.Plugin)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.ReplayDone(ctx, pluginsock.ReplayDone{}); err != nil && !errors.Is(err, model.ErrUnsupported) {
		return err
	}
	if err := install(ctx, c, plan, inbound); err != nil {
		return err
	}
	counter := func() (uint64, error) { return d.Counter(port, "tx") }
	if err := sut.WaitFlowing(ctx, counter, 120*time.Second); err != nil {
		st, _ := d.Counters()
		return fmt.Errorf("no packets out: %v (%v)", err, st)
	}
	pid := strconv.Itoa(d.Pid())
	if err := control("--instr=on", pid); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // the instrumented code settles
	if err := control("--zero", pid); err != nil {
		return err
	}
	tx0, _ := counter()
	time.Sleep(o.seconds)
	if err := control("--dump", pid); err != nil {
		return fmt.Errorf("%w\n%s\n%s", err, tail(filepath.Join(dir, "swanpathd.log")), tail(vglog))
	}
	tx1, _ := counter()
	st, _ := d.Counters()
	if err := d.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "swanpathd: %v\n", err)
	}
	dumps, _ := filepath.Glob(out + ".*")
	if len(dumps) == 0 {
		return fmt.Errorf("callgrind wrote no dump")
	}
	sort.Strings(dumps)
	dump := dumps[0]
	for _, f := range dumps {
		if !strings.HasSuffix(f, ".1") {
			continue
		}
		dump = f
	}
	if o.keep != "" {
		if err := os.MkdirAll(o.keep, 0o755); err != nil {
			return err
		}
		b, err := os.ReadFile(dump)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.keep, name+".callgrind"), b, 0o644); err != nil {
			return err
		}
	}
	return report(o, name, dump, tx1-tx0, st)
}

func install(ctx context.Context, c *pluginsock.Client, p *traffic.Plan, inbound bool) error {
	if err := c.AddSA(ctx, p.ModelSA(0, inbound)); err != nil {
		return err
	}
	return c.AddPolicy(ctx, p.ModelPolicy(0, inbound))
}

func simArgs(on bool) string {
	if on {
		return "--cache-sim=yes --branch-sim=yes "
	}
	return ""
}

// tail is the end of a log file.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return path + ":\n" + string(b)
}

func control(args ...string) error {
	b, err := exec.Command("callgrind_control", args...).CombinedOutput()
	if err != nil || strings.Contains(string(b), "Error") || strings.Contains(string(b), "No active") {
		return fmt.Errorf("callgrind_control %v: %v: %s", args, err, b)
	}
	fmt.Fprintf(os.Stderr, "callgrind_control %v: %s", args, b)
	return nil
}

// fnCost is one function's exclusive instructions and calls in the dump.
type fnCost struct {
	name  string
	obj   string
	ir    uint64
	ev    []uint64 // every event of the dump, in its order (Ir first)
	calls uint64
}

// ownCode tells the C functions compiled into swanpathd from the Go
// runtime's and from the shared libraries'.
func ownCode(f fnCost) bool {
	return strings.Contains(f.obj, "swanpathd") && !strings.HasPrefix(f.name, "runtime.") &&
		!strings.HasPrefix(f.name, "0x") && !strings.Contains(f.name, "cgo")
}

// report reads the dump with callgrind_annotate's conventions: "fn=" lines
// open a function's cost lines, "calls=" lines count calls of the next cfn.
func report(o options, name, dump string, tx uint64, st map[string]map[string]uint64) error {
	fns, err := parseDump(dump)
	if err != nil {
		return err
	}
	var packets uint64
	var ppNames []string
	re := o.perPacket
	if re == "" {
		// every packet leaves through net_null, whose tx frees each mbuf
		// with a call of its own: its most called function counts them
		var best fnCost
		for _, f := range fns {
			if strings.Contains(f.obj, "net_null") && f.calls > best.calls {
				best = f
			}
		}
		packets = best.calls
		ppNames = append(ppNames, fmt.Sprintf("%s in %s", best.name, filepath.Base(best.obj)))
	} else {
		pp, err := regexp.Compile(re)
		if err != nil {
			return err
		}
		for _, f := range fns {
			if pp.MatchString(f.name) && f.calls > 0 {
				if packets == 0 || f.calls < packets {
					packets = f.calls
				}
				ppNames = append(ppNames, fmt.Sprintf("%s=%d", f.name, f.calls))
			}
		}
	}
	if packets == 0 && re == "tx" {
		packets = tx
	}
	if packets == 0 {
		return fmt.Errorf("no calls of a per-packet function matching %s in the dump", re)
	}
	sort.Slice(fns, func(i, j int) bool { return fns[i].ir > fns[j].ir })
	total := make([]uint64, len(eventNames))
	own := make([]uint64, len(eventNames))
	for _, f := range fns {
		for i, v := range f.ev {
			total[i] += v
			if ownCode(f) {
				own[i] += v
			}
		}
	}
	per := func(v uint64) float64 { return float64(v) / float64(packets) }
	fmt.Printf("== %s: %d packets in the dump (calls of %s; tx counter moved %d over the window)\n",
		name, packets, strings.Join(ppNames, " "), tx)
	fmt.Printf("   per packet: all code / C code in swanpathd (the fast path and the DPDK inlines it compiles in)\n")
	for i, e := range eventNames {
		fmt.Printf("   %-5s %10.1f %10.1f\n", e, per(total[i]), per(own[i]))
	}
	for i, f := range fns {
		if i >= o.top {
			break
		}
		fmt.Printf("   %10.1f  %8.3f  %-50s %s\n", float64(f.ir)/float64(packets), float64(f.calls)/float64(packets), f.name, filepath.Base(f.obj))
	}
	return nil
}

// eventNames are the dump's events: Ir, and with -sim the cache and
// branch events (Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim).
var eventNames []string

func parseDump(path string) ([]fnCost, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	// name compression: "(id) name" defines, "(id)" refers
	names := map[string]map[string]string{"fn": {}, "ob": {}, "fl": {}}
	resolve := func(kind, v string) string {
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, "(") {
			i := strings.Index(v, ")")
			id, rest := v[:i+1], strings.TrimSpace(v[i+1:])
			if rest != "" {
				names[kind][id] = rest
				return rest
			}
			return names[kind][id]
		}
		return v
	}
	byKey := map[string]*fnCost{}
	var cur *fnCost
	var curObj, cfn, cob string
	inCall := false
	var events []string
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "events:"):
			events = strings.Fields(l[7:])
		case strings.HasPrefix(l, "ob="):
			curObj = resolve("ob", l[3:])
		case strings.HasPrefix(l, "fl=") || strings.HasPrefix(l, "fi=") || strings.HasPrefix(l, "fe="):
			resolve("fl", l[3:])
		case strings.HasPrefix(l, "fn="):
			n := resolve("fn", l[3:])
			k := curObj + "\x00" + n
			if byKey[k] == nil {
				byKey[k] = &fnCost{name: n, obj: curObj}
			}
			cur = byKey[k]
		case strings.HasPrefix(l, "cob="):
			cob = resolve("ob", l[4:])
		case strings.HasPrefix(l, "cfi=") || strings.HasPrefix(l, "cfl="):
			resolve("fl", l[4:])
		case strings.HasPrefix(l, "cfn="):
			cfn = resolve("fn", l[4:])
		case strings.HasPrefix(l, "calls="):
			f := strings.Fields(l[6:])
			n, _ := strconv.ParseUint(f[0], 10, 64)
			o := cob
			if o == "" {
				o = curObj
			}
			k := o + "\x00" + cfn
			if byKey[k] == nil {
				byKey[k] = &fnCost{name: cfn, obj: o}
			}
			byKey[k].calls += n
			inCall = true
			cob = ""
		case l != "" && (l[0] >= '0' && l[0] <= '9' || l[0] == '+' || l[0] == '-' || l[0] == '*'):
			if inCall {
				// the inclusive cost line of the call: not exclusive
				inCall = false
				continue
			}
			f := strings.Fields(l)
			if cur != nil && len(f) >= 2 {
				if cur.ev == nil {
					cur.ev = make([]uint64, len(events))
				}
				for i, v := range f[1:] {
					if i < len(cur.ev) {
						n, _ := strconv.ParseUint(v, 10, 64)
						cur.ev[i] += n
					}
				}
				cur.ir = cur.ev[0]
			}
		}
	}
	out := make([]fnCost, 0, len(byKey))
	for _, f := range byKey {
		out = append(out, *f)
	}
	eventNames = events
	return out, sc.Err()
}
