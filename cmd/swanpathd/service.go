package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/swanpath/swanpath/bridge/engine"
)

// service tells systemd how swanpathd is doing: STATUS= lines, and the
// watchdog keep-alive, sent only while every worker's packet loop goes
// round (a worker stuck in a loop, or starved of its CPU, then leads to
// a restart by systemd; charon's plugin replays into the new process).
type service struct {
	log      *slog.Logger
	progress func() []uint64                  // per-worker loop counts (Fastpath.Progress)
	status   func() string                    // what STATUS= says now
	notify   func(state string) (bool, error) // sd_notify
}

func newService(log *slog.Logger, progress func() []uint64, status func() string) *service {
	return &service{log: log, progress: progress, status: status,
		notify: func(s string) (bool, error) { return daemon.SdNotify(false, s) }}
}

// progressWatch remembers every worker's loop count at the last keep-alive.
type progressWatch struct {
	last []uint64
}

// moved says whether every worker went round since the last time moved
// said so (or since the first call), and which one did not.
func (p *progressWatch) moved(now []uint64) (bool, int) {
	if p.last == nil || len(p.last) != len(now) {
		p.last = append([]uint64(nil), now...)
		return true, -1
	}
	for w := range now {
		if now[w] == p.last[w] {
			return false, w
		}
	}
	copy(p.last, now)
	return true, -1
}

// run sends STATUS= when it changes and, when systemd asks for a watchdog
// (WatchdogSec=), WATCHDOG=1 four times per interval while the workers
// progress. It returns when ctx ends.
func (s *service) run(ctx context.Context) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		s.log.Warn("systemd watchdog", "err", err)
	}
	tick := time.Second
	if interval > 0 {
		tick = min(interval/4, time.Second)
		s.log.Info("systemd watchdog on: keep-alives while every worker progresses", "interval", interval)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	var pw progressWatch
	pw.moved(s.progress())
	lastStatus := s.status()
	_, _ = s.notify("STATUS=" + lastStatus)
	stalled := -1
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		ok, w := pw.moved(s.progress())
		st := s.status()
		if !ok {
			// the keep-alive is withheld for as long as it does not move
			st = fmt.Sprintf("worker %d makes no progress: watchdog keep-alive withheld", w)
			if stalled != w {
				s.log.Error("a worker makes no progress; systemd's watchdog will restart swanpathd", "worker", w)
			}
			stalled = w
		} else {
			if stalled >= 0 {
				s.log.Warn("the workers progress again", "worker", stalled)
			}
			stalled = -1
			if interval > 0 {
				_, _ = s.notify(daemon.SdNotifyWatchdog)
			}
		}
		if st != lastStatus {
			_, _ = s.notify("STATUS=" + st)
			lastStatus = st
		}
	}
}

// statusLine is swanpathd's STATUS= text for a fast path that is closed
// or not, with n SAs and m policies installed.
func statusLine(closed bool, sas, policies int) string {
	if closed {
		return fmt.Sprintf("fast path closed: waiting for charon's replay (%d SAs, %d policies)", sas, policies)
	}
	return fmt.Sprintf("forwarding: %d SAs, %d policies", sas, policies)
}

// engineStatus is the STATUS= text of eng's state.
func engineStatus(eng *engine.Engine) func() string {
	return func() string { return statusLine(eng.Closed(), len(eng.ListSAs()), len(eng.ListPolicies())) }
}
