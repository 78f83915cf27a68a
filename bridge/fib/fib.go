// Package fib turns the kernel's routing state (routes, neighbours and
// addresses, as bridge/kernel's mirror snapshots it) into the fast path's
// FIB, and has the kernel resolve the next hops the fast path missed.
package fib

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/kernel"
)

// Translate keeps of s what is reachable through the fast path's ports;
// portOf maps the TAP interface of each port (ifindex) to the port.
func Translate(s *kernel.Snapshot, portOf map[int]int) dataplane.FIB {
	var fib dataplane.FIB
	seen := map[netip.Prefix]bool{}
	for _, r := range s.Routes { // sorted: the best of equal prefixes first
		if seen[r.Dst] {
			continue
		}
		seen[r.Dst] = true
		if r.Reject {
			fib.Routes = append(fib.Routes, dataplane.Route{Dst: r.Dst, Blackhole: true})
			continue
		}
		port, ok := portOf[r.IfIndex]
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
		port, ok := portOf[n.IfIndex]
		if !ok {
			continue
		}
		fib.Neighs = append(fib.Neighs, dataplane.Neigh{Port: port, IP: n.IP, MAC: n.MAC})
	}
	return fib
}

// Target is where the FIB goes (the fast path; dataplane.Dataplane has it).
type Target interface {
	SetFIB(dataplane.FIB) error
}

// Resolver has the kernel resolve a next hop (kernel.Mirror has it).
type Resolver interface {
	Resolve(ifindex int, ip netip.Addr) error
}

// Feeder keeps the fast path's FIB in step with the kernel's snapshots.
type Feeder struct {
	log      *slog.Logger
	target   Target
	resolver Resolver
	// TAP ifindex <-> port index
	portOf map[int]int
	tapOf  []int
	last   *dataplane.FIB // what the fast path has; only Update's goroutine touches it
}

// New returns a Feeder for the ports whose TAP interfaces are taps, in
// port order (taps[i] is port i's ifindex).
func New(log *slog.Logger, target Target, resolver Resolver, taps []int) *Feeder {
	f := &Feeder{log: log, target: target, resolver: resolver, portOf: map[int]int{}, tapOf: taps}
	for port, ifindex := range taps {
		f.portOf[ifindex] = port
	}
	return f
}

// NewFeeder returns a Feeder for dp's ports (which it lists in index
// order), their TAP interfaces looked up by name.
func NewFeeder(log *slog.Logger, dp dataplane.Dataplane, resolver Resolver) (*Feeder, error) {
	var taps []int
	for _, p := range dp.Ports() {
		ifi, err := net.InterfaceByName(p.Tap)
		if err != nil {
			return nil, fmt.Errorf("TAP interface %s of port %s: %w", p.Tap, p.Name, err)
		}
		taps = append(taps, ifi.Index)
	}
	log.Debug("FIB ports", "taps", taps)
	return New(log, dp, resolver, taps), nil
}

// Update hands the FIB of s to the fast path unless it has it already
// (kernel.Mirror.Run's onChange).
func (f *Feeder) Update(s *kernel.Snapshot) {
	fib := Translate(s, f.portOf)
	// neighbour state changes (REACHABLE -> STALE) alone change nothing here
	if f.last != nil && reflect.DeepEqual(*f.last, fib) {
		return
	}
	t0 := time.Now()
	if err := f.target.SetFIB(fib); err != nil {
		f.log.Error("FIB update", "err", err)
		return
	}
	f.last = &fib
	f.log.Debug("FIB updated", "routes", len(fib.Routes), "neighbours", len(fib.Neighs), "took", time.Since(t0).Round(time.Microsecond))
}

// Resolve has the kernel resolve a next hop the fast path had no
// neighbour for (ARP, ND); the next snapshot then carries the MAC.
func (f *Feeder) Resolve(port int, ip netip.Addr) {
	if port < 0 || port >= len(f.tapOf) {
		return
	}
	if err := f.resolver.Resolve(f.tapOf[port], ip); err != nil {
		f.log.Debug("resolve next hop", "port", port, "ip", ip, "err", err)
	}
}
