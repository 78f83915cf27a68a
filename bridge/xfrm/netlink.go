package xfrm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The kernel's XFRM over netlink (NETLINK_XFRM): one socket subscribed to
// the SA, policy, expire and migrate groups, one for dumps and requests. Raw
// sockets rather than vishvananda/netlink's handles: its XFRM monitor
// parses only expire and acquire, and the bytes of every message that
// carries keys must be wiped, including in the receive buffer.

// subscribeRcvBuf makes overruns rare when a daemon installs many SAs at
// once (forced, as root).
const subscribeRcvBuf = 4 << 20

type nlConn struct {
	sub, req int
	buf      []byte // the subscription's receive buffer
	mu       struct {
		sync.Mutex
		seq  uint32
		rbuf []byte
	}
}

var _ Conn = (*nlConn)(nil)

// Dial opens the kernel's XFRM in the network namespace of the calling
// thread.
func Dial() (Conn, error) {
	c := &nlConn{sub: -1, req: -1, buf: make([]byte, 1<<16)}
	c.mu.rbuf = make([]byte, 1<<16)
	var err error
	if c.sub, err = open(1<<(nl.XFRMNLGRP_SA-1) | 1<<(nl.XFRMNLGRP_POLICY-1) | 1<<(nl.XFRMNLGRP_EXPIRE-1) | 1<<(nl.XFRMNLGRP_MIGRATE-1)); err != nil {
		return nil, fmt.Errorf("subscribe to XFRM: %w", err)
	}
	if err := unix.SetsockoptInt(c.sub, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, subscribeRcvBuf); err != nil {
		_ = unix.SetsockoptInt(c.sub, unix.SOL_SOCKET, unix.SO_RCVBUF, subscribeRcvBuf)
	}
	if c.req, err = open(0); err != nil {
		unix.Close(c.sub)
		return nil, fmt.Errorf("open XFRM: %w", err)
	}
	return c, nil
}

func open(groups uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_XFRM)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (c *nlConn) Close() error {
	unix.Close(c.sub)
	unix.Close(c.req)
	clear(c.buf)
	return nil
}

// Receive waits for notifications (polling, so that ctx can stop it).
func (c *nlConn) Receive(ctx context.Context) ([]Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fds := []unix.PollFd{{Fd: int32(c.sub), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 200)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, err
		}
		if n <= 0 {
			continue
		}
		nr, _, err := unix.Recvfrom(c.sub, c.buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.ENOBUFS) {
			return nil, ErrOverrun
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		msgs, err := split(c.buf[:nr])
		clear(c.buf[:nr])
		return msgs, err
	}
}

// split copies the messages out of a receive buffer.
func split(b []byte) ([]Message, error) {
	ms, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	out := make([]Message, 0, len(ms))
	for _, m := range ms {
		out = append(out, Message{Type: m.Header.Type, Data: append([]byte(nil), m.Data...)})
	}
	return out, nil
}

func (c *nlConn) DumpSAs() ([]Message, error)      { return c.dump(nl.XFRM_MSG_GETSA) }
func (c *nlConn) DumpPolicies() ([]Message, error) { return c.dump(nl.XFRM_MSG_GETPOLICY) }

func (c *nlConn) dump(typ uint16) ([]Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq, err := c.sendLocked(typ, unix.NLM_F_DUMP, nil)
	if err != nil {
		return nil, err
	}
	var out []Message
	for {
		msgs, err := c.recvLocked()
		if err != nil {
			wipeMsgs(out)
			return nil, err
		}
		for _, m := range msgs {
			if m.seq != seq {
				clear(m.Data)
				continue
			}
			switch m.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				wipeMsgs(out)
				return nil, nlError(m.Data)
			}
			out = append(out, m.Message)
		}
	}
}

// Do sends one request and waits for the kernel's acknowledgement.
func (c *nlConn) Do(typ, flags uint16, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq, err := c.sendLocked(typ, unix.NLM_F_ACK|flags, data)
	if err != nil {
		return err
	}
	for {
		msgs, err := c.recvLocked()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.seq == seq && m.Type == unix.NLMSG_ERROR {
				return nlError(m.Data)
			}
		}
	}
}

func (c *nlConn) sendLocked(typ, flags uint16, data []byte) (uint32, error) {
	c.mu.seq++
	b := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(data))
	native.PutUint32(b[0:], uint32(unix.SizeofNlMsghdr+len(data)))
	native.PutUint16(b[4:], typ)
	native.PutUint16(b[6:], unix.NLM_F_REQUEST|flags)
	native.PutUint32(b[8:], c.mu.seq)
	b = append(b, data...)
	err := unix.Sendto(c.req, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	clear(b)
	return c.mu.seq, err
}

type seqMessage struct {
	Message
	seq uint32
}

func (c *nlConn) recvLocked() ([]seqMessage, error) {
	if err := unix.SetsockoptTimeval(c.req, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return nil, err
	}
	n, _, err := unix.Recvfrom(c.req, c.mu.rbuf, 0)
	if err != nil {
		return nil, err
	}
	ms, err := syscall.ParseNetlinkMessage(c.mu.rbuf[:n])
	if err != nil {
		clear(c.mu.rbuf[:n])
		return nil, fmt.Errorf("netlink: %w", err)
	}
	out := make([]seqMessage, 0, len(ms))
	for _, m := range ms {
		out = append(out, seqMessage{Message{Type: m.Header.Type, Data: append([]byte(nil), m.Data...)}, m.Header.Seq})
	}
	clear(c.mu.rbuf[:n])
	return out, nil
}

func nlError(b []byte) error {
	if len(b) < 4 {
		return errShort
	}
	if e := int32(native.Uint32(b)); e != 0 {
		return syscall.Errno(-e)
	}
	return nil
}

// LocalAddrs returns a function that says whether an address is one of
// this namespace's own (an SA to it is inbound). It lists the addresses
// again at most once a second, and when an address is not among them.
func LocalAddrs() func(netip.Addr) bool {
	var mu sync.Mutex
	var set map[netip.Addr]bool
	var at time.Time
	load := func() {
		set = map[netip.Addr]bool{}
		at = time.Now()
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				set[ip.Unmap()] = true
			}
		}
	}
	return func(a netip.Addr) bool {
		mu.Lock()
		defer mu.Unlock()
		if set == nil || (!set[a] && time.Since(at) > time.Second) {
			load()
		}
		return set[a]
	}
}
