// swanpathd is the swanpath daemon: the DPDK fast path that encrypts and
// decrypts every ESP packet of a strongSwan gateway, and the control plane
// that feeds it (charon plugin socket, kernel route/neighbour mirror,
// management socket for swanpathctl). Wiring only; the parts live in
// bridge/ and fastpath/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/fib"
	"github.com/swanpath/swanpath/bridge/kernel"
	"github.com/swanpath/swanpath/bridge/metrics"
	"github.com/swanpath/swanpath/bridge/pluginsock"
	"github.com/swanpath/swanpath/bridge/xfrm"
	"github.com/swanpath/swanpath/fastpath"
	"github.com/swanpath/swanpath/internal/slogjournal"
)

const usage = `Usage: swanpathd [-config FILE] [-check | -cleanup]

swanpathd runs swanpath's DPDK IPsec fast path for a strongSwan or
libreswan gateway. charon's kernel-swanpath plugin installs SAs and
policies over the plugin socket (source.kind = "plugin"), or swanpathd
mirrors those the IKE daemon installs in the kernel's XFRM (source.kind =
"xfrm": libreswan, or charon with kernel-netlink); every ESP packet is then
processed here, and everything else goes to the kernel through one TAP
interface per port.

Under systemd (swanpathd.service) it reports READY once the fast path
forwards, STATUS= lines, and watchdog keep-alives while every worker makes
progress; logs go to the journal with fields (journalctl -u swanpathd
SPI=0x...). SIGHUP (systemctl reload) re-reads FILE: log.level changes at
once, every other key at the next restart (the log names them).
-cleanup, for the package's removal, deletes what swanpathd keeps between
runs (its TAPs, nftables table swanpath, /run/swanpath, DPDK's files).

Options:
`

func main() {
	cfgPath := flag.String("config", "/etc/swanpath/swanpathd.toml", "configuration file (TOML)")
	check := flag.Bool("check", false, "check the configuration and exit")
	clean := flag.Bool("cleanup", false, "remove the TAPs, nftables table and runtime files of a stopped swanpathd, and exit")
	flag.Usage = func() {
		fmt.Fprint(os.Stderr, usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	// before anything can hold a key
	if err := noCoreDumps(); err != nil {
		fmt.Fprintln(os.Stderr, "swanpathd:", err)
		os.Exit(1)
	}

	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "swanpathd:", err)
		os.Exit(2)
	}
	if *check {
		fmt.Printf("%s: configuration OK (%d ports)\n", *cfgPath, len(cfg.Ports))
		return
	}
	if *clean {
		if err := cleanup(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "swanpathd:", err)
			os.Exit(1)
		}
		return
	}
	log, level := newLogger(cfg.Log.Level)
	if err := run(log, cfg, &reloader{log: log, path: *cfgPath, level: level, cur: cfg}); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// handleNotes polls what the packet loop noted: next hops to resolve, and
// packets for trap policies, which become acquires to charon.
func handleNotes(ctx context.Context, dp dataplane.Dataplane, feeder *fib.Feeder, eng *engine.Engine, notify func(engine.Event)) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			for _, n := range dp.Notes() {
				switch n.Kind {
				case dataplane.NoteNoNeighbour:
					feeder.Resolve(n.Port, n.Dst)
				case dataplane.NoteAcquire:
					if ev, ok := eng.Acquire(now, n.Reqid, n.Src, n.Dst); ok {
						notify(ev)
					}
				case dataplane.NoteMapping:
					if ev, ok := eng.Mapping(now, n.SPI, n.Src, n.SrcPort); ok {
						notify(ev)
					}
				}
			}
		}
	}
}

// checkpointSeqs saves the sequence numbers every second, so that after a
// crash the outbound SAs charon replays continue above them and the inbound
// ones refuse what they received. While it fails, the engine blocks the
// outbound SAs before a crash could make them reuse a number.
func checkpointSeqs(ctx context.Context, log *slog.Logger, eng *engine.Engine) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			err := eng.Checkpoint(false)
			if err != nil && !failing {
				log.Error("checkpoint of sequence numbers failed; outbound SAs are blocked and rekeyed before a crash could reuse their numbers", "err", err)
			} else if err == nil && failing {
				log.Info("checkpoint of sequence numbers works again")
			}
			failing = err != nil
		}
	}
}

// openSeqState loads the sequence numbers of the last run and marks the
// file as running (a crash from now on adds the margin). Neither failing
// stops swanpathd: a damaged or unreadable file is an empty state (every
// SA charon replays without a record is rekeyed, and blocked until then
// if outbound), and a file that cannot be marked makes the outbound SAs
// resumed from it come back blocked.
func openSeqState(log *slog.Logger, path string) *engine.SeqState {
	seqs, err := engine.LoadSeqState(path)
	if err != nil {
		log.Error("sequence state unreadable: the SAs charon replays are rekeyed (outbound ones send nothing until then)", "err", err)
	}
	if err := seqs.MarkRunning(); err != nil {
		log.Error("sequence state not writable: the outbound SAs charon replays are rekeyed and send nothing until then", "err", err)
	}
	return seqs
}

// kernelIface is the kernel interface a port reads with AF_PACKET
// (net_af_packet, net_pcap with iface=), or "".
func kernelIface(device string) string {
	name, args, _ := strings.Cut(device, ",")
	if !strings.HasPrefix(name, "net_af_packet") && !strings.HasPrefix(name, "net_pcap") {
		return ""
	}
	for _, kv := range strings.Split(args, ",") {
		if v, ok := strings.CutPrefix(kv, "iface="); ok {
			return v
		}
	}
	return ""
}

// newLogger logs structured entries to the journal when stderr goes there
// (under systemd), else to stderr as text: level and message, no colour,
// no timestamp (journald adds its own). The level can change later.
func newLogger(level string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	lv.Set(l)
	if slogjournal.Usable() {
		return slog.New(slogjournal.New(lv, "swanpathd", nil)), lv
	}
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
		Level: lv,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h), lv
}

func run(log *slog.Logger, cfg Config, rl *reloader) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := checkRuntimePaths(cfg); err != nil {
		return err
	}

	fcfg := fastpath.Config{
		EALArgs:         cfg.ealArgs(),
		Crypto:          cfg.Crypto.PMD,
		LookasideCrypto: cfg.Crypto.Mode == "lookaside",
		NATTPort:        uint16(cfg.Fastpath.NATTPort),
		IdleSleep:       time.Duration(cfg.Fastpath.IdleSleepUS) * time.Microsecond,
		Mbufs:           uint32(cfg.Fastpath.Mbufs),
		MaxSAs:          uint32(cfg.Fastpath.MaxSAs),
		Log:             log,
	}
	for _, p := range cfg.Ports {
		fcfg.Ports = append(fcfg.Ports, fastpath.PortConfig{Name: p.Name, Device: p.Device, Tap: p.Tap, MTU: p.MTU})
		if ifname := kernelIface(p.Device); ifname != "" {
			if err := kernel.Isolate(ifname); err != nil {
				return fmt.Errorf("port %s: %w", p.Name, err)
			}
			log.Info("kernel stack kept off the port's interface", "port", p.Name, "iface", ifname)
		}
	}
	for _, ifc := range cfg.Interfaces {
		mss, _ := mssClamp(ifc.MSSClamp) // checked by loadConfig
		fcfg.Interfaces = append(fcfg.Interfaces, fastpath.InterfaceConfig{Name: ifc.Name, IfID: ifc.IfID, Mark: ifc.Mark,
			MTU: ifc.MTU, MSSClamp: mss})
	}
	// before the fast path forwards anything
	seqs := openSeqState(log, cfg.Fastpath.StateFile)
	_, _ = daemon.SdNotify(false, "STATUS=starting the fast path (EAL, ports, crypto devices)")
	fp, err := fastpath.Open(fcfg)
	if err != nil {
		return err
	}
	defer fp.Close()

	eng := engine.New(log, fp)
	eng.KeepSequences(seqs)
	eng.SetReconcileGrace(cfg.reconcileGrace())
	mirror := kernel.NewMirror(log)
	feeder, err := fib.NewFeeder(log, fp, mirror)
	if err != nil {
		return err
	}

	// the source of SAs and policies, and where the engine's events
	// (expiries, acquires, mappings) go
	var (
		notify    func(engine.Event)
		runSource func(context.Context) error
		plugin    *pluginsock.Server
	)
	switch cfg.Source.Kind {
	case sourceXFRM:
		m := xfrm.New(xfrm.Config{Log: log, Engine: eng, Stats: fp.SAStats,
			Local: xfrm.LocalAddrs(), Dial: xfrm.Dial})
		notify, runSource = m.Notify, m.Run
	default:
		plugin, err = pluginsock.Listen(ctx, log, cfg.Plugin.Socket, pluginsock.ForEngine(eng))
		if err != nil {
			return err
		}
		defer plugin.Close()
		notify = plugin.NotifyEngine
	}
	rts := newRates()
	ctlSrv, err := ctl.Listen(ctx, log, cfg.Control.Socket, &views{eng: eng, dp: fp, rates: rts, ifcs: cfg.Interfaces})
	if err != nil {
		return err
	}
	defer ctlSrv.Close()

	workers := 8
	errc := make(chan error, workers+1)
	if runSource != nil {
		workers++
		go func() { errc <- runSource(ctx) }()
	}
	go func() { errc <- rts.run(ctx, eng, time.Second) }()
	go func() { errc <- runVici(ctx, log, cfg.Vici.Socket, eng) }()
	go func() { errc <- mirror.Run(ctx, feeder.Update) }()
	go func() { errc <- handleNotes(ctx, fp, feeder, eng, notify) }()
	go func() { errc <- checkpointSeqs(ctx, log, eng) }()
	// soft/hard lifetimes by bytes, packets and time reach charon as
	// expire events, as from the kernel
	go func() { errc <- eng.WatchLifetimes(ctx, 100*time.Millisecond, notify) }()
	go func() { errc <- newService(log, fp.Progress, engineStatus(eng)).run(ctx) }()
	go func() { errc <- rl.watch(ctx) }()
	if cfg.Metrics.Listen != "" {
		workers++
		mc := &metrics.Collector{Eng: eng, DP: fp, Latency: fp.Latency}
		go func() { errc <- metrics.Serve(ctx, log, cfg.Metrics.Listen, mc) }()
	}

	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify", "err", err)
	} else if ok {
		log.Debug("sent READY to systemd")
	}
	if plugin != nil {
		log.Info("swanpathd ready", "source", cfg.Source.Kind, "plugin_socket", cfg.Plugin.Socket, "control_socket", cfg.Control.Socket)
	} else {
		log.Info("swanpathd ready", "source", cfg.Source.Kind, "control_socket", cfg.Control.Socket)
	}

	var first error
	got := 0
	select {
	case <-ctx.Done():
	case first = <-errc:
		got = 1
	}
	stop()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	for ; got < workers; got++ {
		if err := <-errc; first == nil {
			first = err
		}
	}
	// no more packets: the sequence numbers are final
	if plugin != nil {
		plugin.Close()
	}
	fp.Stop()
	if err := eng.Checkpoint(true); err != nil {
		log.Error("saving sequence numbers", "err", err)
	}
	if first != nil && !errors.Is(first, context.Canceled) {
		return first
	}
	log.Info("swanpathd stopping")
	return nil
}
