package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/kernel"
)

// fibFeeder turns the kernel's view (routes and neighbours on the TAP
// interfaces) into the fast path's FIB, and asks the kernel to resolve the
// next hops the fast path missed.
type fibFeeder struct {
	log    *slog.Logger
	dp     dataplane.Dataplane
	mirror *kernel.Mirror
	// TAP ifindex <-> port index
	portOf map[int]int
	tapOf  []int
	last   *dataplane.FIB // what the fast path has; only Run's goroutine touches it
}

func newFIBFeeder(log *slog.Logger, dp dataplane.Dataplane, m *kernel.Mirror) (*fibFeeder, error) {
	f := &fibFeeder{log: log, dp: dp, mirror: m, portOf: map[int]int{}}
	for _, p := range dp.Ports() {
		ifi, err := net.InterfaceByName(p.Tap)
		if err != nil {
			return nil, fmt.Errorf("TAP interface %s of port %s: %w", p.Tap, p.Name, err)
		}
		f.portOf[ifi.Index] = p.Index
		f.tapOf = append(f.tapOf, ifi.Index)
	}
	return f, nil
}

// translate keeps what is reachable through the fast path's ports.
func (f *fibFeeder) translate(s *kernel.Snapshot) dataplane.FIB {
	var fib dataplane.FIB
	seen := map[netip.Prefix]bool{}
	for _, r := range s.Routes { // sorted: the best of equal prefixes first
		if seen[r.Dst] {
			continue
		}
		if r.Reject {
			seen[r.Dst] = true
			fib.Routes = append(fib.Routes, dataplane.Route{Dst: r.Dst, Blackhole: true})
			continue
		}
		seen[r.Dst] = true
		port, ok := f.portOf[r.IfIndex]
		if !ok {
			// out of an interface the fast path does not own: the
			// kernel forwards it
			fib.Routes = append(fib.Routes, dataplane.Route{Dst: r.Dst, Local: true})
			continue
		}
		fib.Routes = append(fib.Routes, dataplane.Route{Dst: r.Dst, Port: port, Gateway: r.Gateway})
	}
	for _, a := range s.Local {
		fib.Routes = append(fib.Routes, dataplane.Route{Dst: netip.PrefixFrom(a, a.BitLen()), Local: true})
	}
	for _, n := range s.Neighs {
		port, ok := f.portOf[n.IfIndex]
		if !ok {
			continue
		}
		fib.Neighs = append(fib.Neighs, dataplane.Neigh{Port: port, IP: n.IP, MAC: n.MAC})
	}
	return fib
}

func (f *fibFeeder) update(s *kernel.Snapshot) {
	fib := f.translate(s)
	// neighbour state changes (REACHABLE -> STALE) alone change nothing here
	if f.last != nil && reflect.DeepEqual(*f.last, fib) {
		return
	}
	if err := f.dp.SetFIB(fib); err != nil {
		f.log.Error("FIB update", "err", err)
		return
	}
	f.last = &fib
	f.log.Debug("FIB updated", "routes", len(fib.Routes), "neighbours", len(fib.Neighs))
}

// resolveMisses polls the fast path's neighbour misses and has the kernel
// resolve them (ARP); the next snapshot then carries the MAC.
func (f *fibFeeder) resolveMisses(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		for _, m := range f.dp.Misses() {
			if m.Port < 0 || m.Port >= len(f.tapOf) {
				continue
			}
			if err := f.mirror.Resolve(f.tapOf[m.Port], m.IP); err != nil {
				f.log.Debug("resolve next hop", "port", m.Port, "ip", m.IP, "err", err)
			}
		}
	}
}
