// xfrmprobe runs swanpathd's control plane — the engine and the XFRM
// mirror — on a data plane that only counts, inside a kernel host with ESP
// (TestXFRMMirrorKernel). Outbound SAs "carry" 1000 bytes and 10 packets a
// second; every SA and policy the engine installs, and the fast path's
// opening, is printed on stdout; the log goes to stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/bridge/xfrm"
)

type countingDP struct {
	mu  sync.Mutex
	sas map[model.SAID]*sa
}

type sa struct {
	inbound bool
	added   time.Time
	start   uint64
}

func say(format string, a ...any) { fmt.Printf(format+"\n", a...) }

func (d *countingDP) AddSA(s *model.SA) error {
	defer s.Wipe()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sas[s.SAID] = &sa{inbound: s.Inbound, added: time.Now(), start: s.SeqStart}
	say("SA add spi=0x%08x dir=%s enc=%d int=%d keylen=%d icv=%d encap=%v sport=%d dport=%d esn=%v window=%d seqstart=%d soft_bytes=%d reqid=%d",
		s.SPI, s.Direction(), s.EncAlg, s.IntAlg, len(s.EncKey), s.ICVLen, s.Encap, s.SrcPort, s.DstPort, s.ESN,
		s.ReplayWindow, s.SeqStart, s.Soft.Bytes, s.Reqid)
	return nil
}

func (d *countingDP) DelSA(id model.SAID) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.sas, id)
	say("SA del spi=0x%08x", id.SPI)
	return nil
}

func (d *countingDP) MoveSA(id model.SAID, src, dst netip.Addr, sport, dport uint16, encap bool) error {
	d.mu.Lock()
	if s, ok := d.sas[id]; ok {
		delete(d.sas, id)
		id.Dst = dst
		d.sas[id] = s // its counters go on under its new ID
	}
	d.mu.Unlock()
	say("SA move spi=0x%08x src=%s dst=%s encap=%v sport=%d dport=%d", id.SPI, src, dst, encap, sport, dport)
	return nil
}
func (d *countingDP) ExpireSA(id model.SAID) error { say("SA expire spi=0x%08x", id.SPI); return nil }
func (d *countingDP) BlockSA(id model.SAID) error  { say("SA block spi=0x%08x", id.SPI); return nil }
func (d *countingDP) SetPolicy(b dataplane.Binding) error {
	say("policy set sel=%q dir=%s action=%s reqid=%d prio=%d bound=%v tmpl=%s->%s", b.Policy.Sel.String(), b.Policy.Dir, b.Policy.Action,
		b.Policy.Reqid, b.Policy.Priority, b.HasSA, b.Policy.TmplSrc, b.Policy.TmplDst)
	return nil
}
func (d *countingDP) DelPolicy(id model.PolicyID) error {
	say("policy del sel=%q dir=%s", id.Sel.String(), id.Dir)
	return nil
}
func (d *countingDP) Bind(id model.PolicyID, s model.SAID, has bool) error {
	say("policy bind sel=%q spi=0x%08x %v", id.Sel.String(), s.SPI, has)
	return nil
}
func (d *countingDP) SetFIB(f dataplane.FIB) error { return nil }
func (d *countingDP) SAStats(id model.SAID) (dataplane.SACounters, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sas[id]
	if !ok {
		return dataplane.SACounters{}, false
	}
	secs := uint64(time.Since(s.added) / time.Second)
	if s.inbound {
		return dataplane.SACounters{}, true
	}
	return dataplane.SACounters{Bytes: 1000 * secs, Packets: 10 * secs, SeqUsed: max(s.start, 1) + 10*secs,
		LastUse: time.Now()}, true
}
func (d *countingDP) Ports() []dataplane.PortInfo      { return nil }
func (d *countingDP) PortStats() []dataplane.PortStats { return nil }
func (d *countingDP) SetClosed(closed bool)            { say("closed=%v", closed) }
func (d *countingDP) Notes() []dataplane.Note          { return nil }

func main() {
	secs := flag.Int("secs", 30, "run this long")
	state := flag.String("state", "", "sequence state file")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(*secs)*time.Second)
	defer cancel()
	dp := &countingDP{sas: map[model.SAID]*sa{}}
	eng := engine.New(log, dp)
	if *state != "" {
		st, err := engine.LoadSeqState(*state)
		if err != nil {
			log.Error("state", "err", err)
		}
		if err := st.MarkRunning(); err != nil {
			log.Error("state", "err", err)
		}
		eng.KeepSequences(st)
		defer func() {
			if err := eng.Checkpoint(true); err != nil {
				log.Error("checkpoint", "err", err)
			}
		}()
	}
	m := xfrm.New(xfrm.Config{Log: log, Engine: eng, Stats: dp.SAStats, Local: xfrm.LocalAddrs(), Dial: xfrm.Dial,
		CounterInterval: 200 * time.Millisecond})
	go func() { _ = eng.WatchLifetimes(ctx, 100*time.Millisecond, m.Notify) }()
	if err := m.Run(ctx); err != nil {
		log.Error("mirror", "err", err)
		os.Exit(1)
	}
	say("stopped")
}
