package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is a Host that is a network namespace: commands run through `ip netns
// exec`, the test process opens its sockets on a thread that entered the
// namespace (setns), Close kills what is left in it and deletes it.
type NS struct {
	Name  string // full netns name, e.g. "sp1a2b3c-gw"
	procs *procSet
}

// NewNS creates network namespace name with lo up. Close deletes it.
func NewNS(ctx context.Context, name string) (*NS, error) {
	return createNS(ctx, name, nil)
}

// createNS makes the namespace; its processes are also added to parent
// (the lab's, which stops them all in reverse order of their start).
func createNS(ctx context.Context, name string, parent *procSet) (*NS, error) {
	n := &NS{Name: name, procs: &procSet{parent: parent}}
	if err := run(ctx, "ip", "netns", "add", name); err != nil {
		return nil, err
	}
	if err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *NS) String() string { return n.Name }

func (n *NS) command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", n.Name}, args...)
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, "ip", full...)
	} else {
		cmd = exec.Command("ip", full...)
	}
	// Own process group, so Stop reaches children too; SIGKILL if the test
	// binary dies without running cleanups (the netns is then removed by the
	// next RemoveStale).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Exec runs args in the namespace and returns its stdout; on failure the
// error carries the command and its stderr.
func (n *NS) Exec(ctx context.Context, args ...string) (string, error) {
	cmd := n.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %s: %w: %s", n.Name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Sysctl sets key (dotted form) to value in the namespace.
func (n *NS) Sysctl(ctx context.Context, key, value string) error {
	_, err := n.Exec(ctx, "sysctl", "-q", "-w", key+"="+value)
	return err
}

// Start runs args in the background in the namespace. The process is
// stopped by Close (the lab's cleanup) at the latest.
func (n *NS) Start(args ...string) (*Proc, error) {
	return n.StartEnv(nil, args...)
}

// StartEnv is Start with extra environment variables ("K=V").
func (n *NS) StartEnv(env []string, args ...string) (*Proc, error) {
	cmd := n.command(nil, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	return startProc(n.Name+": "+strings.Join(args, " "), cmd, n.procs)
}

// Capture runs tcpdump in the namespace (see Host).
func (n *NS) Capture(iface, bpfFilter string, snaplen int, path string) (*Capture, error) {
	return startCapture(n, iface, bpfFilter, snaplen, path)
}

// ListenPacket opens a packet socket of the test process in the namespace.
func (n *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	return inside(n, func() (net.PacketConn, error) { return net.ListenPacket(network, address) })
}

// Dial connects a socket of the test process from the namespace.
func (n *NS) Dial(network, address string) (net.Conn, error) {
	return inside(n, func() (net.Conn, error) { return net.Dial(network, address) })
}

// inside is n.enter for a function that makes a value (a socket).
func inside[T any](n *NS, fn func() (T, error)) (T, error) {
	var v T
	err := n.enter(func() (err error) {
		v, err = fn()
		return err
	})
	return v, err
}

// SendFrames writes the frames onto iface through an AF_PACKET socket: they
// leave iface exactly as given, e.g. captured frames sent again to replay
// them at the other end of a veth.
func (n *NS) SendFrames(iface string, frames [][]byte) error {
	err := n.enter(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		// protocol 0: the socket sends only, it receives nothing
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		defer syscall.Close(fd)
		for i, f := range frames {
			if len(f) < 14 {
				return fmt.Errorf("frame %d: %d bytes, shorter than an Ethernet header", i, len(f))
			}
			// sll_protocol is the EtherType in network byte order, and
			// Go copies the field as is: read the frame's bytes natively
			proto := binary.NativeEndian.Uint16(f[12:14])
			sa := &syscall.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: proto}
			if err := syscall.Sendto(fd, f, 0, sa); err != nil {
				return fmt.Errorf("frame %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("send frames on %s %s: %w", n.Name, iface, err)
	}
	return nil
}

// enter runs fn on an OS thread that has entered the namespace. A socket
// fn opens belongs to that namespace for its whole life, whichever thread
// uses it later. The thread goes back to its own namespace afterwards and
// is returned to the runtime; if it cannot go back it stays locked and
// exits with the goroutine (no process is ever started from it, so the
// Pdeathsig children of other threads are not affected).
func (n *NS) enter(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(n.Name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", n.Name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Close stops the processes started in the namespace, SIGKILLs whatever
// else still runs there and deletes it. A namespace already gone is no
// error.
func (n *NS) Close() error {
	if n.procs != nil {
		n.procs.stopAll()
	}
	if !netnsExists(n.Name) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	killNetnsPids(ctx, n.Name)
	return run(ctx, "ip", "netns", "del", n.Name)
}

// killNetnsPids SIGKILLs every process in namespace name and waits (polling)
// until none is left, so that the namespace really goes away on delete.
func killNetnsPids(ctx context.Context, name string) {
	_ = Poll(ctx, "processes in "+name+" gone", 20*time.Millisecond, func() (bool, error) {
		out, err := output(ctx, "ip", "netns", "pids", name)
		if err != nil || strings.TrimSpace(out) == "" {
			return true, nil
		}
		for _, f := range strings.Fields(out) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return false, errors.New(strings.Join(strings.Fields(out), " "))
	})
}

func netnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}

// flushConntrack makes the namespace's connection tracking forget every
// mapping (what a NAT box forgets when it reboots).
func (n *NS) flushConntrack() error {
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		return err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return err
	}
	defer nh.Close()
	if err := nh.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("flush conntrack in %s: %w", n.Name, err)
	}
	return nil
}
