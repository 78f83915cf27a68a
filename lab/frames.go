package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
)

// SendFrames writes each frame, Ethernet header included, byte for byte
// onto interface iface in namespace role through an AF_PACKET socket: the
// frames leave iface exactly as given, e.g. captured frames sent again to
// replay them at the other end of a veth.
func (l *Lab) SendFrames(role, iface string, frames [][]byte) error {
	ns := l.NS(role).Name
	err := inNetns(ns, func() error {
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
		return fmt.Errorf("send frames on %s %s: %w", ns, iface, err)
	}
	return nil
}
