package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var captureSeq atomic.Uint64

// Capture is a running tcpdump writing a pcap file.
type Capture struct {
	Path string
	proc *Proc
}

// Capture starts tcpdump on iface in namespace role, writing every packet
// that matches bpfFilter (may be empty) to a pcap in the lab dir. It returns
// once tcpdump listens.
func (l *Lab) Capture(role, iface, bpfFilter string) (*Capture, error) {
	return l.CaptureSnap(role, iface, bpfFilter, 128)
}

// CaptureSnap is Capture keeping snaplen bytes of each frame (Packet.Data),
// e.g. whole frames to send again.
func (l *Lab) CaptureSnap(role, iface, bpfFilter string, snaplen int) (*Capture, error) {
	h := l.Host(role)
	if h == nil {
		return nil, fmt.Errorf("capture %s %s: the lab has no such host", role, iface)
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%s-%s-%d.pcap", role, iface, captureSeq.Add(1)))
	return h.Capture(iface, bpfFilter, snaplen, path)
}

// startCapture runs tcpdump on h (Host.Capture of every kind of host).
func startCapture(h Host, iface, bpfFilter string, snaplen int, path string) (*Capture, error) {
	// -U: write each packet at once; --immediate-mode: get each packet from
	// the kernel at once (libpcap otherwise leaves up to a second of them in
	// the ring, and tcpdump loses those when it stops); -Z root: Debian's
	// tcpdump would drop to user tcpdump, which cannot write into the 0700
	// test dir.
	args := []string{"tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-s", strconv.Itoa(snaplen), "-w", path}
	if bpfFilter != "" {
		args = append(args, bpfFilter)
	}
	p, err := h.Start(args...)
	if err != nil {
		return nil, err
	}
	err = PollFor(context.Background(), "tcpdump listens", 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		select {
		case <-p.Done():
			return false, errors.New("tcpdump exited")
		default:
		}
		return strings.Contains(p.Output(), "listening on"), nil
	})
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("capture %s %s: %w: %s", h, iface, err, p.Output())
	}
	return &Capture{Path: path, proc: p}, nil
}

// Stop ends the capture (tcpdump flushes on SIGTERM) and returns its packets.
func (c *Capture) Stop() ([]Packet, error) {
	if err := c.proc.Stop(); err != nil {
		return nil, fmt.Errorf("tcpdump: %w: %s", err, c.proc.Output())
	}
	return ReadPcap(c.Path)
}

// Packet is the decoded summary of one captured IPv4 frame.
type Packet struct {
	Time     time.Time
	Len      int // original frame length
	EtherTyp uint16
	Src, Dst netip.Addr
	Proto    uint8 // IP protocol: 1 ICMP, 6 TCP, 17 UDP, 50 ESP
	SrcPort  uint16
	DstPort  uint16
	// ESPinUDP: UDP (to or from port 4500) whose payload does not start with
	// the 4-byte non-ESP marker (RFC 3948 section 2.2), i.e. ESP, not IKE.
	ESPinUDP bool
	SPI      uint32 // ESP SPI (raw ESP or ESP-in-UDP)
	Data     []byte // the captured bytes (up to the snap length)
}

func (p Packet) String() string {
	switch {
	case !p.Src.IsValid():
		return fmt.Sprintf("ethertype 0x%04x len %d", p.EtherTyp, p.Len)
	case p.ESPinUDP:
		return fmt.Sprintf("%s:%d > %s:%d ESP-in-UDP spi 0x%08x len %d", p.Src, p.SrcPort, p.Dst, p.DstPort, p.SPI, p.Len)
	case p.Proto == 6 || p.Proto == 17:
		return fmt.Sprintf("%s:%d > %s:%d proto %d len %d", p.Src, p.SrcPort, p.Dst, p.DstPort, p.Proto, p.Len)
	default:
		return fmt.Sprintf("%s > %s proto %d len %d", p.Src, p.Dst, p.Proto, p.Len)
	}
}

// ReadPcap reads an Ethernet pcap file (micro- or nanosecond, either byte
// order) and decodes the IPv4 frames in it; others keep only EtherTyp.
func ReadPcap(path string) ([]Packet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var gh [24]byte
	if _, err := io.ReadFull(f, gh[:]); err != nil {
		return nil, fmt.Errorf("pcap %s: header: %w", path, err)
	}
	var bo binary.ByteOrder
	nano := false
	switch binary.LittleEndian.Uint32(gh[0:4]) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("pcap %s: bad magic %x", path, gh[0:4])
	}
	if lt := bo.Uint32(gh[20:24]); lt != 1 {
		return nil, fmt.Errorf("pcap %s: link type %d, want Ethernet (1)", path, lt)
	}
	var pkts []Packet
	for {
		var rh [16]byte
		if _, err := io.ReadFull(f, rh[:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return pkts, nil // a truncated last record is dropped
			}
			return nil, err
		}
		sec, frac := int64(bo.Uint32(rh[0:4])), int64(bo.Uint32(rh[4:8]))
		if !nano {
			frac *= 1000
		}
		incl, orig := bo.Uint32(rh[8:12]), bo.Uint32(rh[12:16])
		if incl > 1<<18 {
			return nil, fmt.Errorf("pcap %s: record of %d bytes", path, incl)
		}
		data := make([]byte, incl)
		if _, err := io.ReadFull(f, data); err != nil {
			return pkts, nil
		}
		p := decodeEthernet(data)
		p.Time, p.Len, p.Data = time.Unix(sec, frac), int(orig), data
		pkts = append(pkts, p)
	}
}

func decodeEthernet(b []byte) Packet {
	var p Packet
	if len(b) < 14 {
		return p
	}
	p.EtherTyp = binary.BigEndian.Uint16(b[12:14])
	b = b[14:]
	if p.EtherTyp == 0x8100 && len(b) >= 4 { // one VLAN tag
		p.EtherTyp = binary.BigEndian.Uint16(b[2:4])
		b = b[4:]
	}
	var l4 []byte
	switch {
	case p.EtherTyp == 0x0800 && len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return p
		}
		p.Proto = b[9]
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return p // a later fragment: no transport header
		}
		l4 = b[ihl:]
	case p.EtherTyp == 0x86dd && len(b) >= 40 && b[0]>>4 == 6:
		// the fixed header only: what the lab sends carries no
		// extension headers (Proto is then the first one's number)
		p.Proto = b[6]
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return p
	}
	switch p.Proto {
	case 6, 17:
		if len(l4) < 4 {
			return p
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		if p.Proto == 17 && (p.SrcPort == 4500 || p.DstPort == 4500) && len(l4) >= 12 {
			payload := l4[8:]
			// A 1-byte 0xff payload is a NAT-T keepalive (RFC 3948 2.3).
			if spi := binary.BigEndian.Uint32(payload[0:4]); spi != 0 {
				p.ESPinUDP, p.SPI = true, spi
			}
		}
	case 50:
		if len(l4) >= 4 {
			p.SPI = binary.BigEndian.Uint32(l4[0:4])
		}
	}
	return p
}

// LinkLocal says whether p is IPv6 from a link-local or unspecified source
// (neighbour discovery, MLD): link traffic, not routed.
func LinkLocal(p Packet) bool {
	return p.Src.Is6() && (p.Src.IsLinkLocalUnicast() || p.Src.IsUnspecified())
}

// WANSummary counts what CheckWAN saw between the two gateways.
type WANSummary struct {
	Packets  int // all frames
	ESPinUDP int
	IKE      int // UDP 500/4500 that is not ESP (IKE, NAT-T keepalives)
}

// CheckWAN verifies a capture of the WAN link: every IPv4 packet is between
// 192.0.2.1 and 192.0.2.2 and is IKE or ESP-in-UDP; no inner address
// (10.0.0.0/8) is ever on the wire in clear. The error lists up to 10
// offending packets.
func CheckWAN(pkts []Packet) (WANSummary, error) {
	gw, pr := netip.MustParseAddr(GWWanAddr), netip.MustParseAddr(PRWanAddr)
	var s WANSummary
	var bad []string
	nbad := 0
	for _, p := range pkts {
		s.Packets++
		if !p.Src.IsValid() || LinkLocal(p) {
			continue // ARP, IPv6 neighbour discovery and MLD
		}
		pair := (p.Src == gw && p.Dst == pr) || (p.Src == pr && p.Dst == gw)
		switch {
		case pair && p.ESPinUDP:
			s.ESPinUDP++
		case pair && p.Proto == 17 && (p.DstPort == 500 || p.DstPort == 4500):
			s.IKE++
		default:
			nbad++
			if len(bad) < 10 {
				bad = append(bad, p.String())
			}
		}
	}
	if nbad > 0 {
		return s, fmt.Errorf("%d unexpected packets on WAN, first: %s", nbad, strings.Join(bad, "; "))
	}
	return s, nil
}

// SendFrames writes each frame, Ethernet header included, byte for byte
// onto interface iface of host role (Host.SendFrames), e.g. captured frames
// sent again to replay them at the other end of a link.
func (l *Lab) SendFrames(role, iface string, frames [][]byte) error {
	h := l.Host(role)
	if h == nil {
		return fmt.Errorf("send frames on %s %s: the lab has no such host", role, iface)
	}
	return h.SendFrames(iface, frames)
}
