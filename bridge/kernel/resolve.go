package kernel

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Resolve asks the kernel to resolve the next hop ip on interface ifindex, as if the
// kernel itself had a packet to send there: the fast path calls it when a route's next
// hop has no usable neighbour entry. The answer arrives as a neighbour notification and
// thus in a later Snapshot. Resolve never blocks; repeated requests for the same next hop
// within the resolve interval are dropped silently (nil), since one is already in flight.
func (m *Mirror) Resolve(ifindex int, ip netip.Addr) error {
	ip = ip.Unmap()
	if ifindex <= 0 || !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("resolve ifindex=%d ip=%s: invalid next hop", ifindex, ip)
	}
	key := neighKey{ifindex, ip}
	now := time.Now()

	m.resolver.Lock()
	defer m.resolver.Unlock()
	if m.resolver.queue == nil {
		return fmt.Errorf("resolve ifindex=%d ip=%s: %w", ifindex, ip, ErrNotRunning)
	}
	if t, ok := m.resolver.last[key]; ok && now.Sub(t) < m.resolveEvery {
		return nil
	}
	select {
	case m.resolver.queue <- key:
	default:
		return fmt.Errorf("resolve ifindex=%d ip=%s: %w", ifindex, ip, ErrQueueFull)
	}
	m.resolver.last[key] = now
	// Forget old entries so the map stays as small as the set of next hops being
	// resolved right now.
	if len(m.resolver.last) > 1024 {
		for k, t := range m.resolver.last {
			if now.Sub(t) >= m.resolveEvery {
				delete(m.resolver.last, k)
			}
		}
	}
	return nil
}

func (m *Mirror) setResolveQueue(q chan neighKey) {
	m.resolver.Lock()
	defer m.resolver.Unlock()
	m.resolver.queue = q
	clear(m.resolver.last)
}

// resolveLoop performs the requests queued by Resolve. It has its own netlink handle:
// a Handle's request/response exchange must not interleave with the dumps of Run.
func (m *Mirror) resolveLoop(ctx context.Context, queue <-chan neighKey) {
	h, err := netlink.NewHandleAt(m.ns)
	if err != nil {
		m.log.Error("kernel mirror: resolver disabled: open netlink handle", "err", err)
		h = nil
	} else {
		defer h.Close()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case key := <-queue:
			m.log.Debug("kernel mirror: resolving", "ifindex", key.ifindex, "ip", key.ip)
			if err := m.resolveOne(h, key); err != nil {
				m.log.Debug("kernel mirror: resolve failed", "ifindex", key.ifindex, "ip", key.ip, "err", err)
			}
		}
	}
}

// resolveOne triggers neighbour resolution. NTF_USE on RTM_NEWNEIGH makes neigh_add call
// neigh_event_send (net/core/neighbour.c), the same call the kernel makes when it has a
// packet for an unresolved neighbour: it creates the entry if needed, moves it to
// INCOMPLETE and solicits at once, or refreshes a STALE entry through DELAY/PROBE. No
// packet is involved, so nothing is queued or lost. If that fails, a UDP datagram to the
// discard port from a socket bound to the device has the same effect via the output path.
//
// A static entry (PERMANENT or NOARP) is left alone: NTF_USE strips NUD_PERMANENT
// (__neigh_update) and the entry then solicits like a dynamic one; with nobody
// answering, the operator's static neighbour would be gone. The fast path can miss such
// an entry only while the mirror has not caught up; the next snapshot brings it.
func (m *Mirror) resolveOne(h *netlink.Handle, key neighKey) error {
	if h != nil {
		family := unix.AF_INET6
		if key.ip.Is4() {
			family = unix.AF_INET
		}
		if static, err := isStatic(h, key, family); err != nil {
			m.log.Debug("kernel mirror: neighbour lookup failed", "ifindex", key.ifindex, "ip", key.ip, "err", err)
		} else if static {
			return nil
		}
		err := h.NeighSet(&netlink.Neigh{
			LinkIndex: key.ifindex,
			Family:    family,
			Flags:     unix.NTF_USE,
			IP:        key.ip.AsSlice(),
		})
		if err == nil {
			return nil
		}
		m.log.Debug("kernel mirror: NTF_USE failed, falling back to UDP", "ifindex", key.ifindex, "ip", key.ip, "err", err)
	}
	return m.poke(key)
}

// isStatic tells whether the kernel holds the neighbour key as a static entry.
func isStatic(h *netlink.Handle, key neighKey, family int) (bool, error) {
	neighs, err := h.NeighList(key.ifindex, family)
	if err != nil {
		return false, err
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == key.ip {
			return n.State&(unix.NUD_PERMANENT|unix.NUD_NOARP) != 0, nil
		}
	}
	return false, nil
}

// poke sends one empty UDP datagram to ip:9 (discard, RFC 863) out of interface
// ifindex. With the socket bound to the device, the kernel assumes an unrouted
// destination to be on-link (ip_route_output_key_hash_rcu), so this resolves the
// neighbour even without a route.
func (m *Mirror) poke(key neighKey) error {
	family := unix.AF_INET6
	if key.ip.Is4() {
		family = unix.AF_INET
	}
	fd, err := socketIn(m.ns, family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("resolve ifindex=%d ip=%s: socket: %w", key.ifindex, key.ip, err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX, key.ifindex); err != nil {
		return fmt.Errorf("resolve ifindex=%d ip=%s: bind to device: %w", key.ifindex, key.ip, err)
	}
	var sa unix.Sockaddr
	if key.ip.Is4() {
		sa = &unix.SockaddrInet4{Port: 9, Addr: key.ip.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: 9, Addr: key.ip.As16(), ZoneId: uint32(key.ifindex)}
	}
	if err := unix.Sendto(fd, nil, unix.MSG_DONTWAIT, sa); err != nil {
		return fmt.Errorf("resolve ifindex=%d ip=%s: send: %w", key.ifindex, key.ip, err)
	}
	return nil
}

// socketIn opens a socket in namespace ns (netns.None(): the current one). Sockets stay
// in the namespace they were created in, so only the creation needs the switch.
func socketIn(ns netns.NsHandle, domain, typ, proto int) (int, error) {
	if !ns.IsOpen() {
		return unix.Socket(domain, typ, proto)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("enter netns: %w", err)
	}
	fd, sockErr := unix.Socket(domain, typ, proto)
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the other namespace: keep it locked so the runtime
		// discards it when this goroutine exits instead of reusing it.
		if sockErr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("restore netns: %w", err)
	}
	runtime.UnlockOSThread()
	return fd, sockErr
}
