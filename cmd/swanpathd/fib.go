package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"

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
	// the gateway's own addresses, exactly: only to these does the fast
	// path take IKE and ESP-in-UDP for itself (a local route may cover a
	// whole prefix); loopback ones never come from the wire
	for _, a := range s.Local {
		if a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() {
			fib.Addrs = append(fib.Addrs, a)
		}
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

// resolve has the kernel resolve a next hop the fast path had no
// neighbour for (ARP); the next snapshot then carries the MAC.
func (f *fibFeeder) resolve(port int, ip netip.Addr) {
	if port < 0 || port >= len(f.tapOf) {
		return
	}
	if err := f.mirror.Resolve(f.tapOf[port], ip); err != nil {
		f.log.Debug("resolve next hop", "port", port, "ip", ip, "err", err)
	}
}
