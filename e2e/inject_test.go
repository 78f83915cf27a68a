package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on a thread that has entered the named namespace; sockets
// fn opens stay in that namespace. The thread goes back to the test's own
// namespace afterwards and is returned to the runtime: letting it exit
// instead would SIGKILL every process that was started from it (the lab's
// daemons run with Pdeathsig, which follows the starting thread).
func inNetns(name string, fn func() error) error {
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
		h, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		} // else: the thread stays locked and exits with the goroutine
		errc <- err
	}()
	return <-errc
}

// sendESPinUDP sends n ESP-in-UDP datagrams (RFC 3948) from namespace ns to
// dst:4500 with the given SPI, sequence numbers from seq on, and a payload
// that is no valid ciphertext: IV + data + a 16-byte "ICV" of junk.
func sendESPinUDP(ns string, dst string, spi uint32, seq uint32, n int) error {
	return inNetns(ns, func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(dst, "4500"))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			pkt := make([]byte, 8+8+64+16)
			binary.BigEndian.PutUint32(pkt[0:], spi)
			binary.BigEndian.PutUint32(pkt[4:], seq+uint32(i))
			for j := 8; j < len(pkt); j++ {
				pkt[j] = byte(j * 7)
			}
			if _, err := c.Write(pkt); err != nil {
				return err
			}
		}
		return nil
	})
}
