package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// session is one set of netlink subscriptions. The netlink library starts, per
// subscription, a goroutine that closes the socket when done is closed and a receiver
// goroutine that closes the update channel when it exits; stop waits for the latter, so
// no goroutine of a stopped session outlives it.
type session struct {
	done   chan struct{}
	errs   chan error
	routes chan netlink.RouteUpdate
	neighs chan netlink.NeighUpdate
	addrs  chan netlink.AddrUpdate
	links  chan netlink.LinkUpdate
	drains []func() // one per subscription whose receiver goroutine is running
}

func (m *Mirror) subscribe() (*session, error) {
	s := &session{
		done:   make(chan struct{}),
		errs:   make(chan error, 1),
		routes: make(chan netlink.RouteUpdate, updateChanLen),
		neighs: make(chan netlink.NeighUpdate, updateChanLen),
		addrs:  make(chan netlink.AddrUpdate, updateChanLen),
		links:  make(chan netlink.LinkUpdate, updateChanLen),
	}
	ns := m.ns
	// The receiver goroutines call this, also while stop closes their sockets, when
	// nobody reads errs any more: it must never block.
	onErr := func(err error) {
		select {
		case <-s.done:
		case s.errs <- err:
		default:
		}
	}
	err := netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr,
		ReceiveBufferSize: m.rcvBuf, ReceiveBufferForceSize: true,
	})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribe routes: %w", err)
	}
	s.drains = append(s.drains, func() { drain(s.routes) })
	err = netlink.NeighSubscribeWithOptions(s.neighs, s.done, netlink.NeighSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr,
		ReceiveBufferSize: m.rcvBuf, ReceiveBufferForceSize: true,
	})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribe neighbours: %w", err)
	}
	s.drains = append(s.drains, func() { drain(s.neighs) })
	err = netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr,
		ReceiveBufferSize: m.rcvBuf, ReceiveBufferForceSize: true,
	})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribe addresses: %w", err)
	}
	s.drains = append(s.drains, func() { drain(s.addrs) })
	err = netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr,
		ReceiveBufferSize: m.rcvBuf, ReceiveBufferForceSize: true,
	})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribe links: %w", err)
	}
	s.drains = append(s.drains, func() { drain(s.links) })
	return s, nil
}

// stop closes the sockets and waits until every receiver goroutine has exited. Draining
// matters: a receiver blocked sending an update would otherwise never see its socket
// closed.
func (s *session) stop() {
	close(s.done)
	for _, d := range s.drains {
		d()
	}
	s.drains = nil
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}

// dumpRetries bounds how often a dump interrupted by concurrent changes
// (NLM_F_DUMP_INTR) is repeated before its possibly inconsistent result is used; the
// periodic dump repairs it later.
const dumpRetries = 3

func dumpAll(h *netlink.Handle) (*tables, error) {
	var t *tables
	var err error
	for range dumpRetries {
		t, err = dumpOnce(h)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		err = nil
	}
	return t, err
}

// dumpOnce reads everything. An interrupted dump still yields complete tables (the
// library returns what it got) together with ErrDumpInterrupted.
func dumpOnce(h *netlink.Handle) (*tables, error) {
	t := newTables()
	var intr error
	check := func(op string, err error) error {
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			intr = err
			return nil
		}
		if err != nil {
			return fmt.Errorf("dump %s: %w", op, err)
		}
		return nil
	}

	links, err := h.LinkList()
	if err := check("links", err); err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs() != nil {
			ml := convertLink(l)
			t.links[ml.Index] = ml
		}
	}

	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err := check("addresses", err); err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if ip := ipAddr(a.IP); ip.IsValid() {
			t.addrs[addrKey{a.LinkIndex, ip}] = struct{}{}
		}
	}

	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err := check("routes", err); err != nil {
			return nil, err
		}
		for i := range routes {
			if r, key, ok := convertRoute(&routes[i]); ok {
				t.routes[key] = append(t.routes[key], r)
			}
		}
		neighs, err := h.NeighList(0, fam)
		if err := check("neighbours", err); err != nil {
			return nil, err
		}
		for i := range neighs {
			if key, n, ok := convertNeigh(&neighs[i]); ok {
				t.neighs[key] = n
			}
		}
	}
	return t, intr
}

// equal reports whether two tables hold the same state; the order of routes sharing a
// key matters, since the first one is what a lookup uses.
func (t *tables) equal(o *tables) bool {
	if !maps.EqualFunc(t.routes, o.routes, slices.Equal) ||
		!maps.Equal(t.addrs, o.addrs) {
		return false
	}
	if !maps.EqualFunc(t.neighs, o.neighs, func(a, b Neigh) bool {
		return a.IfIndex == b.IfIndex && a.IP == b.IP && a.State == b.State && bytes.Equal(a.MAC, b.MAC)
	}) {
		return false
	}
	return maps.EqualFunc(t.links, o.links, func(a, b Link) bool {
		return a.Index == b.Index && a.Name == b.Name && a.Up == b.Up && a.LowerUp == b.LowerUp &&
			bytes.Equal(a.MAC, b.MAC)
	})
}
