// swanpath-bench measures the swanpathd fast path on one worker core, side
// by side with DPDK's ipsec-secgw and the crypto PMD's own ceiling, on
// in-memory ports (net_pcap replaying generated traffic into net_null), so
// that the numbers are the packet path's cost and not I/O. It also measures
// how fast SAs install through the plugin socket, whether forwarding
// stalls meanwhile, and the memory an SA takes. `make bench` runs it; see
// README.md. Root only (namespaces, hugepages).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/swanpath/swanpath/bench/report"
	"github.com/swanpath/swanpath/bench/sut"
	"github.com/swanpath/swanpath/bench/traffic"
	"github.com/swanpath/swanpath/bench/tsc"
)

type options struct {
	quick      bool
	labSeconds int
	rounds     int
	out        string
	swanpathd  string
	secgw      string
	lcores     string
	pmd, mode  string
	manySAs    int
	installSAs int
	warmup     time.Duration
	window     time.Duration
	windows    int
	cryptoOps  int
	cryptoRuns int
	imix       string
	only       string
}

type bench struct {
	opt      options
	tscHz    float64
	tmp      string
	mixes    []traffic.Mix
	seq      int
	confined bool // this process (and what it starts) kept off the worker CPUs
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// prefix is a unique EAL --file-prefix for one DPDK process.
func (b *bench) prefix(kind string) string {
	b.seq++
	return fmt.Sprintf("spb%d%s%d", os.Getpid(), kind, b.seq)
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "smoke mode: one suite, two sizes, 1 SA, short windows, small install")
	flag.StringVar(&o.out, "out", "", "results directory (default bench/results, or build/bench-quick with -quick)")
	flag.StringVar(&o.swanpathd, "swanpathd", "bin/swanpathd", "swanpathd binary")
	flag.StringVar(&o.secgw, "ipsec-secgw", "build/ipsec-secgw/ipsec-secgw", "ipsec-secgw binary (scripts/bench-deps.sh builds it)")
	flag.StringVar(&o.lcores, "lcores", "0,1", "EAL lcores of every DPDK process: main, then the one worker")
	flag.StringVar(&o.pmd, "pmd", "aesni_gcm", "swanpathd's crypto.pmd")
	flag.StringVar(&o.mode, "mode", "cpu", "swanpathd's crypto.mode (cpu or lookaside); ipsec-secgw's SAs get the matching type (cpu-crypto or no-offload)")
	flag.IntVar(&o.manySAs, "sas", 10000, "SA count of the many-SA cases (0 or 1: none)")
	flag.IntVar(&o.installSAs, "install", -1, "SA + policy pairs of the install experiment (default: -sas, 1000 with -quick; 0: skip)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "traffic before the first window")
	flag.DurationVar(&o.window, "window", 3*time.Second, "length of one measurement window")
	flag.IntVar(&o.windows, "windows", 2, "windows per system and round")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds per case: swanpathd and ipsec-secgw take turns (the median of all windows counts)")
	flag.IntVar(&o.cryptoOps, "crypto-ops", 10_000_000, "dpdk-test-crypto-perf operations per buffer size")
	flag.IntVar(&o.cryptoRuns, "crypto-runs", 1, "dpdk-test-crypto-perf runs per case and round, after the two systems (the median of all counts)")
	flag.StringVar(&o.imix, "imix", "64,570,1420", "IMIX frame sizes, 7:4:1 (see bench/results/README in results.md notes)")
	flag.IntVar(&o.labSeconds, "lab", 10, "seconds of iperf3 (and pings) in the lab experiment (5 with -quick; 0: skip)")
	flag.StringVar(&o.only, "only", "", "run only the cases whose name contains this (e.g. out-gcm128-64-1sa), or only the install or lab experiment (install, lab)")
	flag.Parse()
	if o.quick {
		setIfUnset("window", &o.window, time.Second)
		setIfUnset("warmup", &o.warmup, 500*time.Millisecond)
		setIfUnset("crypto-ops", &o.cryptoOps, 2_000_000)
		setIfUnset("lab", &o.labSeconds, 5)
		setIfUnset("rounds", &o.rounds, 1)
	}
	if o.installSAs < 0 {
		o.installSAs = o.manySAs
		if o.quick {
			o.installSAs = 1000
		}
	}
	if o.out == "" {
		o.out = "bench/results"
		if o.quick {
			o.out = "build/bench-quick"
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "swanpath-bench:", err)
		os.Exit(1)
	}
}

// setIfUnset gives a flag its quick-mode default unless it was given.
func setIfUnset[T any](name string, p *T, v T) {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if !set {
		*p = v
	}
}

func parseIMIX(s string) (traffic.Mix, error) {
	f := strings.Split(s, ",")
	if len(f) != 3 {
		return traffic.Mix{}, fmt.Errorf("-imix %q: want three frame sizes (7:4:1)", s)
	}
	var n [3]int
	for i, x := range f {
		v, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil || v < 64 || v > 1518 {
			return traffic.Mix{}, fmt.Errorf("-imix %q: %q is not a frame size of 64..1518", s, x)
		}
		n[i] = v
	}
	small, mid, large := n[0], n[1], n[2]
	return traffic.Mix{Name: "imix", Sizes: []int{small, mid, small, small, mid, small, large, small, mid, small, mid, small}}, nil
}

func run(o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root (network namespaces, hugepages): make bench in a root shell")
	}
	for _, p := range []string{o.swanpathd} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (make build)", p, err)
		}
	}
	imix, err := parseIMIX(o.imix)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sut.RemoveStale()

	tmp, err := os.MkdirTemp("", "swanpath-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b := &bench{opt: o, tmp: tmp,
		mixes: []traffic.Mix{traffic.Mix64, imix, traffic.Mix1420}}
	for _, s := range traffic.Suites {
		report.SuiteTitles[s.Name] = s.Title
	}
	report.MixTitles["64"], report.MixTitles["1420"] = "64 B", "1420 B"
	report.MixTitles["imix"] = fmt.Sprintf("IMIX %d/%d/%d", imix.Sizes[0], imix.Sizes[1], imix.Sizes[6])

	b.tscHz = tsc.Hz(200 * time.Millisecond)
	repo, _ := filepath.Abs(".")
	res := &report.Results{
		Machine: report.Describe(repo, b.tscHz),
		Started: time.Now(),
		Settings: report.Settings{Quick: o.quick, Warmup: o.warmup.String(), Window: o.window.String(),
			Windows: o.windows, Rounds: o.rounds, Lcores: o.lcores, ManySAs: o.manySAs,
			IMIX:  []int{imix.Sizes[0], imix.Sizes[1], imix.Sizes[6]},
			TSCHz: b.tscHz, CryptoOps: o.cryptoOps, CryptoRuns: o.cryptoRuns},
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}

	// the worker's CPU stays for the worker: this process, and every
	// process it starts, runs on the others
	unpin := func() {}
	if cpus, err := sut.WorkerCPUs(o.lcores); err != nil {
		b.logf("the worker CPUs not kept apart: %v", err)
	} else if restore, err := sut.KeepOff(cpus); err != nil {
		b.logf("not kept off the worker CPUs %v: %v", cpus, err)
	} else {
		unpin, b.confined = restore, true
	}
	defer func() { unpin() }()

	cases := b.cases()
	if o.rounds < 1 {
		o.rounds = 1
	}
	if o.cryptoRuns < 1 {
		o.cryptoRuns = 1
	}
	// per round: two systems and the ceiling; once: the ports alone
	measure := o.warmup + time.Duration(o.windows)*o.window
	b.logf("%d cases, about %s each", len(cases), time.Duration(o.rounds)*(2*measure+10*time.Second)+measure+2*time.Second)
	for i, c := range cases {
		if ctx.Err() != nil {
			break
		}
		b.logf("[%d/%d] %s", i+1, len(cases), c)
		row := b.runCase(ctx, c)
		b.logf("  swanpath %s | ipsec-secgw %s | ceiling %s", show(row.Swanpath), show(row.Secgw), show(row.Ceiling))
		res.Rows = append(res.Rows, row)
	}
	if o.installSAs > 0 && ctx.Err() == nil && o.extra("install") {
		b.logf("install experiment: %d SA + policy pairs", o.installSAs)
		in := b.installExperiment(ctx, o.installSAs)
		res.Install = &in
	}
	unpin()
	unpin = func() {}
	if o.labSeconds > 0 && ctx.Err() == nil && o.extra("lab") {
		b.logf("lab experiment: iperf3 %d s plaintext and through the tunnel, latency at a moderate rate", o.labSeconds)
		lb := b.labExperiment(ctx, filepath.Join(filepath.Dir(o.swanpathd), "swanpathctl"))
		res.Lab = &lb
	}
	res.Finished = time.Now()
	res.Machine.LoadAfter = report.LoadAvg()
	res.Notes = b.notes()
	if ctx.Err() != nil {
		res.Notes = append(res.Notes, "The run was interrupted: the results are incomplete.")
	}
	if err := res.WriteJSON(filepath.Join(o.out, "results.json")); err != nil {
		return err
	}
	if err := res.WriteMarkdown(filepath.Join(o.out, "results.md")); err != nil {
		return err
	}
	if err := res.WriteChart(filepath.Join(o.out, "throughput.png"), tmp); err != nil {
		b.logf("chart: %v", err)
	}
	fmt.Print(res.Markdown())
	b.logf("results in %s", o.out)
	return ctx.Err()
}

// extra says whether the experiment named name runs: always without -only,
// and with -only when -only is its name ("install", "lab").
func (o options) extra(name string) bool {
	return o.only == "" || o.only == name
}

func show(m report.Measure) string {
	if m.OK() {
		return fmt.Sprintf("%.2f Mpps", m.PPS/1e6)
	}
	return "— (" + firstLine(m.Error) + ")"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}
