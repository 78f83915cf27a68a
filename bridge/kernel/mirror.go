// Package kernel mirrors the Linux kernel's routing state — main-table routes, ARP/ND
// neighbours, local addresses and links — for the fast path. The kernel stays the
// authority: it answers ARP, runs ND and owns the FIB; the fast path forwards from an
// immutable Snapshot of it and asks the kernel to resolve next hops it has no MAC for.
//
// Pipeline of Run: dump everything → publish → apply netlink notifications to a private
// copy → coalesce bursts → publish a fresh Snapshot. Netlink multicast is lossy (the
// socket overflows with ENOBUFS under a burst), so any subscription failure restarts the
// subscriptions and re-dumps, and a periodic dump catches whatever slipped through anyway.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Sentinel errors callers can branch on.
var (
	ErrRunning    = errors.New("kernel mirror already running")
	ErrNotRunning = errors.New("kernel mirror not running")
	ErrQueueFull  = errors.New("kernel mirror resolve queue full")
)

const (
	defaultCoalesce       = 20 * time.Millisecond
	defaultResyncInterval = 30 * time.Second
	defaultResolveEvery   = 500 * time.Millisecond
	// The kernel drops multicast notifications when the socket buffer is full; a large
	// buffer makes that rare during route table loads. Forced, since we run as root.
	subscribeRcvBuf = 4 << 20
	// Each subscription channel absorbs a burst while the Run goroutine publishes.
	updateChanLen  = 1024
	restartBackoff = time.Second
)

// Option configures a Mirror.
type Option func(*Mirror)

// WithNamespace makes the Mirror watch the network namespace ns instead of the namespace
// of the calling thread. The caller keeps ownership of ns and must keep it open until Run
// has returned.
func WithNamespace(ns netns.NsHandle) Option { return func(m *Mirror) { m.ns = ns } }

// WithCoalesce sets the minimum spacing of onChange calls caused by notifications.
func WithCoalesce(d time.Duration) Option { return func(m *Mirror) { m.coalesce = d } }

// WithResyncInterval sets how often Run re-dumps everything to repair missed updates.
func WithResyncInterval(d time.Duration) Option { return func(m *Mirror) { m.resyncEvery = d } }

// WithResolveInterval sets the minimum spacing of Resolve requests per next hop.
func WithResolveInterval(d time.Duration) Option { return func(m *Mirror) { m.resolveEvery = d } }

// Mirror keeps a copy of the kernel's routing state for one network namespace.
type Mirror struct {
	log          *slog.Logger
	ns           netns.NsHandle // netns.None(): the namespace of the thread that opens sockets
	coalesce     time.Duration
	resyncEvery  time.Duration
	resolveEvery time.Duration
	rcvBuf       int // subscription socket buffer; tests shrink it to provoke ENOBUFS

	running atomic.Bool
	snap    atomic.Pointer[Snapshot]

	resolver struct {
		sync.Mutex
		queue chan neighKey // nil while Run is not active
		last  map[neighKey]time.Time
	}
}

// NewMirror returns a Mirror of the current network namespace unless WithNamespace says
// otherwise. Nothing happens until Run.
func NewMirror(log *slog.Logger, opts ...Option) *Mirror {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Mirror{
		log:          log,
		ns:           netns.None(),
		coalesce:     defaultCoalesce,
		resyncEvery:  defaultResyncInterval,
		resolveEvery: defaultResolveEvery,
		rcvBuf:       subscribeRcvBuf,
	}
	for _, o := range opts {
		o(m)
	}
	m.resolver.last = make(map[neighKey]time.Time)
	return m
}

// Snapshot returns the latest published snapshot, or nil before the first dump.
func (m *Mirror) Snapshot() *Snapshot { return m.snap.Load() }

// Run dumps the kernel state, publishes it, then follows notifications until ctx is done.
// onChange (may be nil) is called from Run's goroutine with every new snapshot — at most
// once per coalesce interval for notifications — and must not block for long. Run returns
// nil when ctx is done, with every goroutine it started stopped; it returns an error only
// if the first dump or subscription fails.
func (m *Mirror) Run(ctx context.Context, onChange func(*Snapshot)) error {
	if !m.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer m.running.Store(false)
	if onChange == nil {
		onChange = func(*Snapshot) {}
	}

	h, err := netlink.NewHandleAt(m.ns)
	if err != nil {
		return fmt.Errorf("kernel mirror: open netlink handle: %w", err)
	}
	defer h.Close()

	sess, err := m.subscribe()
	if err != nil {
		return fmt.Errorf("kernel mirror: %w", err)
	}
	// Subscribe before dumping: a change made between the two is then seen twice,
	// which is harmless, rather than never.
	t, err := dumpAll(h)
	if err != nil {
		sess.stop()
		return fmt.Errorf("kernel mirror: %w", err)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queue := make(chan neighKey, 64)
	wg.Go(func() { m.resolveLoop(ctx, queue) })
	m.setResolveQueue(queue)
	defer m.setResolveQueue(nil)

	l := &loop{m: m, h: h, t: t, sess: sess, onChange: onChange}
	defer func() { l.sess.stop() }()
	l.publish()
	m.log.Info("kernel mirror started", "routes", len(l.last.Routes), "neighs", len(l.last.Neighs),
		"local", len(l.last.Local), "links", len(l.last.Links))
	l.run(ctx)
	return nil
}

// loop is the state of one Run: everything here belongs to Run's goroutine.
type loop struct {
	m        *Mirror
	h        *netlink.Handle
	t        *tables
	sess     *session // nil after a failed restart, until the retry succeeds
	onChange func(*Snapshot)
	last     *Snapshot
	gen      uint64

	dirty      bool // tables changed since the last publish
	dumpSoon   bool // a notification implied changes the kernel does not announce
	flushTimer *time.Timer
	flush      <-chan time.Time
}

func (l *loop) run(ctx context.Context) {
	resync := time.NewTicker(l.m.resyncEvery)
	defer resync.Stop()
	var retry <-chan time.Time
	for {
		s := l.sess
		if s == nil {
			s = &session{} // nil channels: only ctx, timers and retry fire
		}
		select {
		case <-ctx.Done():
			if l.flushTimer != nil {
				l.flushTimer.Stop()
			}
			return
		case u, ok := <-s.routes:
			if !ok {
				retry = l.restart("route subscription closed")
				continue
			}
			l.changed(l.t.applyRoute(&u), false)
		case u, ok := <-s.neighs:
			if !ok {
				retry = l.restart("neighbour subscription closed")
				continue
			}
			l.changed(l.t.applyNeigh(&u), false)
		case u, ok := <-s.addrs:
			if !ok {
				retry = l.restart("address subscription closed")
				continue
			}
			l.changed(l.t.applyAddr(&u), false)
		case u, ok := <-s.links:
			if !ok {
				retry = l.restart("link subscription closed")
				continue
			}
			l.changed(l.t.applyLink(&u))
		case err := <-s.errs:
			l.m.log.Warn("kernel mirror: netlink subscription error, resyncing", "err", err)
			retry = l.restart("subscription error")
		case <-retry:
			retry = l.restart("retry")
		case <-resync.C:
			if l.sess != nil {
				_ = l.dump("periodic") // logged; the next tick retries
			}
		case <-l.flush:
			l.flush = nil
			if l.dumpSoon {
				_ = l.dump("link state change") // logged; the periodic dump retries
			}
			if l.dirty {
				l.publish()
			}
		}
	}
}

// changed records the effect of one notification and arms the coalescing timer.
func (l *loop) changed(changed, needDump bool) {
	l.dirty = l.dirty || changed
	l.dumpSoon = l.dumpSoon || needDump
	if (l.dirty || l.dumpSoon) && l.flush == nil {
		l.flushTimer = time.NewTimer(l.m.coalesce)
		l.flush = l.flushTimer.C
	}
}

func (l *loop) publish() {
	l.gen++
	l.last = l.t.snapshot(l.gen)
	l.dirty = false
	l.m.snap.Store(l.last)
	l.onChange(l.last)
}

// dump replaces the tables with a fresh dump and publishes if the result differs from
// what the notifications had built.
func (l *loop) dump(why string) error {
	l.dumpSoon = false
	t, err := dumpAll(l.h)
	if err != nil {
		l.m.log.Warn("kernel mirror: resync dump failed", "why", why, "err", err)
		return err
	}
	if !t.equal(l.t) {
		// After a link change this is expected; after a periodic dump it means
		// notifications were lost or mis-applied, which is worth knowing.
		l.m.log.Info("kernel mirror: dump differs from notified state", "why", why)
		l.t = t
		l.dirty = true
	}
	if l.dirty {
		l.publish()
	}
	return nil
}

// restart replaces the subscriptions and re-dumps. On failure it returns a timer channel
// for the next attempt.
func (l *loop) restart(why string) <-chan time.Time {
	if l.sess != nil {
		l.sess.stop()
		l.sess = nil
	}
	sess, err := l.m.subscribe()
	if err != nil {
		l.m.log.Warn("kernel mirror: resubscribe failed", "why", why, "err", err)
		return time.After(restartBackoff)
	}
	l.sess = sess
	l.m.log.Info("kernel mirror: resubscribed", "why", why)
	if err := l.dump(why); err != nil {
		return time.After(restartBackoff)
	}
	return nil
}
