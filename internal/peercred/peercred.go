// Package peercred reads who is at the other end of a unix socket.
package peercred

import (
	"fmt"
	"net"
	"syscall"
)

// Of returns the credentials of c's peer (SO_PEERCRED): for an accepted
// connection the process that connected, for a connected one the process
// that called listen(), as they were at that moment.
func Of(c *net.UnixConn) (syscall.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return syscall.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	var cred *syscall.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return syscall.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	if serr != nil {
		return syscall.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return *cred, nil
}
