package lab

import (
	"context"
	"net"
)

// Host is one machine of the lab as the tests use it: a network namespace
// today (NS), a user-mode-Linux kernel later. Nothing here assumes that
// the test process can enter the host (setns) or that commands go through
// `ip netns exec`: a kernel host may run commands over its console and
// open the test process's sockets through a relay process inside. So the
// surface is what the lab's tools need and no more:
//
//   - Exec, Start, StartEnv: commands, once or in the background (Proc
//     keeps the output; Stop, Signal, Wait end it);
//   - Sysctl: kernel settings;
//   - Capture: tcpdump on one of the host's interfaces into a pcap file;
//   - ListenPacket, Dial, SendFrames: sockets of the test process on the
//     host (UDPSeq, NAT-T keep-alives, forged ESP, replayed frames);
//   - Close: stop what runs there and remove the host.
type Host interface {
	// String names the host in errors and logs, e.g. "sp1a2b3c-gw".
	String() string
	// Exec runs args on the host and returns its stdout; the error
	// carries the command and its stderr.
	Exec(ctx context.Context, args ...string) (string, error)
	// Start runs args in the background until Proc.Stop or Close.
	Start(args ...string) (*Proc, error)
	// StartEnv is Start with extra environment variables ("K=V").
	StartEnv(env []string, args ...string) (*Proc, error)
	// Sysctl sets key (dotted form) to value.
	Sysctl(ctx context.Context, key, value string) error
	// Capture starts tcpdump on iface keeping snaplen bytes of every
	// frame that matches bpfFilter (may be empty), writing the pcap to
	// path; it returns once tcpdump listens.
	Capture(iface, bpfFilter string, snaplen int, path string) (*Capture, error)
	// ListenPacket is net.ListenPacket on the host ("udp4", "udp6").
	ListenPacket(network, address string) (net.PacketConn, error)
	// Dial is net.Dial on the host.
	Dial(network, address string) (net.Conn, error)
	// SendFrames writes each frame, Ethernet header included, byte for
	// byte onto iface.
	SendFrames(iface string, frames [][]byte) error
	// Close stops every process the host runs and removes the host.
	Close() error
}

var _ Host = (*NS)(nil)
