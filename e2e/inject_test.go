package e2e

import (
	"encoding/binary"
	"net"

	"github.com/swanpath/swanpath/lab"
)

// sendESPinUDP sends n ESP-in-UDP datagrams (RFC 3948) from host h to
// dst:4500 with the given SPI, sequence numbers from seq on, and a payload
// that is no valid ciphertext: IV + data + a 16-byte "ICV" of junk.
func sendESPinUDP(h lab.Host, dst string, spi uint32, seq uint32, n int) error {
	c, err := h.Dial("udp4", net.JoinHostPort(dst, "4500"))
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
}
