package traffic

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
)

// Mix is a packet size mix. Sizes are Ethernet frame sizes as RFC 2544
// counts them (FCS included): a 64 B frame is 60 bytes in the pcap, an IPv4
// packet of 46. Frames are offered in the order of Sizes, repeated.
type Mix struct {
	Name  string
	Sizes []int
}

// The mixes of the benchmark. IMIX is 7:4:1 of 64/570/1518 B, interleaved.
var (
	Mix64   = Mix{Name: "64", Sizes: []int{64}}
	Mix1420 = Mix{Name: "1420", Sizes: []int{1420}}
	IMIX    = Mix{Name: "imix", Sizes: []int{64, 570, 64, 64, 570, 64, 1518, 64, 570, 64, 570, 64}}
)

// Mixes lists them in table order.
var Mixes = []Mix{Mix64, IMIX, Mix1420}

// MixByName finds a mix by its Name.
func MixByName(name string) (Mix, bool) {
	for _, m := range Mixes {
		if m.Name == name {
			return m, true
		}
	}
	return Mix{}, false
}

// MeanSize is the mean frame size (FCS included) in bytes.
func (m Mix) MeanSize() float64 {
	t := 0
	for _, s := range m.Sizes {
		t += s
	}
	return float64(t) / float64(len(m.Sizes))
}

// Distinct returns each size once, with how often it occurs in Sizes.
func (m Mix) Distinct() map[int]int {
	d := map[int]int{}
	for _, s := range m.Sizes {
		d[s]++
	}
	return d
}

const (
	ethHdr = 14
	fcs    = 4
	ipHdr  = 20
	udpHdr = 8
	espHdr = 8
)

// InnerIPLen is the IPv4 length of the plaintext packet of a frame size.
func InnerIPLen(frame int) int { return frame - ethHdr - fcs }

// ESPPayloadLen is how many bytes the cipher covers for a plaintext frame
// of this size: the inner IPv4 packet, the padding and the 2-byte trailer.
func (s Suite) ESPPayloadLen(frame int) int {
	n := InnerIPLen(frame) + 2
	return (n + s.Align - 1) / s.Align * s.Align
}

// Count is how many frames a pcap of this plan and mix holds: every SA gets
// traffic and the mix repeats whole. At least 96, so one SA still gets
// several bursts' worth.
func (p *Plan) Count(m Mix) int {
	n := max(len(p.SAs), 96)
	k := len(m.Sizes)
	return (n + k - 1) / k * k
}

// Pick chooses the SA (an index into Plan.SAs) of frame k of a pcap.
type Pick func(k int) int

// RoundRobin spreads frames over every SA in turn.
func (p *Plan) RoundRobin(k int) int { return k % len(p.SAs) }

// ether writes an Ethernet header for IPv4.
func ether(b []byte, dst, src [6]byte) {
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
}

// Checksum is the Internet checksum (RFC 1071) of b.
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ipv4 writes an IPv4 header (no options) with its checksum.
func ipv4(b []byte, total int, proto byte, src, dst netip.Addr, id uint16) {
	b[0] = 0x45
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:4], uint16(total))
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], 0)
	b[8] = 64
	b[9] = proto
	b[10], b[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], Checksum(b[:ipHdr]))
}

// innerPacket is a UDP/IPv4 packet of ipLen bytes from src to dst.
func innerPacket(ipLen int, src, dst netip.Addr, id uint16) []byte {
	b := make([]byte, ipLen)
	ipv4(b, ipLen, 17, src, dst, id)
	u := b[ipHdr:]
	binary.BigEndian.PutUint16(u[0:2], 1024)
	binary.BigEndian.PutUint16(u[2:4], 1024)
	binary.BigEndian.PutUint16(u[4:6], uint16(ipLen-ipHdr))
	// checksum 0: none (RFC 768)
	for i := udpHdr; i < len(u); i++ {
		u[i] = byte(i)
	}
	return b
}

// Some MACs: the gateway's ports ignore the destination MAC of what they
// read from a pcap (no filtering on virtual ports), ipsec-secgw runs
// promiscuous.
var (
	hostMAC = [6]byte{0x02, 0x00, 0x00, 0x00, 0x01, 0x0a}
	gwMAC   = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
)

// Plaintext is frame k of an outbound pcap, of the mix's k-th size: a
// packet from a host of LocalNet to the remote host of SA i, as the LAN
// delivers it.
func (p *Plan) Plaintext(m Mix, k, i int) []byte {
	sa, size := &p.SAs[i], m.Sizes[k%len(m.Sizes)]
	ip := innerPacket(InnerIPLen(size), LocalHost, sa.RemoteHost(), uint16(k))
	b := make([]byte, ethHdr+len(ip))
	ether(b, gwMAC, hostMAC)
	copy(b[ethHdr:], ip)
	return b
}

// ESP is frame k of an inbound pcap: the peer's ESP (or ESP-in-UDP) on
// SA i of a packet from its remote host to LocalHost, whose plaintext
// frame has the mix's k-th size. seq is its ESP sequence number.
func (p *Plan) ESP(m Mix, k, i int, seq uint32) ([]byte, error) {
	sa, size := &p.SAs[i], m.Sizes[k%len(m.Sizes)]
	inner := innerPacket(InnerIPLen(size), sa.RemoteHost(), LocalHost, uint16(k))
	esp, err := p.seal(sa, seq, inner)
	if err != nil {
		return nil, err
	}
	outer := ipHdr + len(esp)
	proto := byte(50)
	if p.Encap {
		outer += udpHdr
		proto = 17
	}
	b := make([]byte, ethHdr+outer)
	ether(b, gwMAC, PeerMAC)
	ipv4(b[ethHdr:], outer, proto, PeerWAN, GatewayWAN, uint16(k))
	l4 := b[ethHdr+ipHdr:]
	if p.Encap {
		binary.BigEndian.PutUint16(l4[0:2], NATTPort)
		binary.BigEndian.PutUint16(l4[2:4], NATTPort)
		binary.BigEndian.PutUint16(l4[4:6], uint16(udpHdr+len(esp)))
		// UDP checksum 0, as RFC 3948 §2.1 allows for ESP-in-UDP over IPv4
		l4 = l4[udpHdr:]
	}
	copy(l4, esp)
	return b, nil
}

// seal builds the ESP packet (header, IV, ciphertext, ICV) of a tunnel-mode
// IPv4 packet (RFC 4303 §2; AES-GCM per RFC 4106, AES-CBC per RFC 3602 with
// HMAC-SHA-256-128 per RFC 4868).
func (p *Plan) seal(sa *SA, seq uint32, inner []byte) ([]byte, error) {
	s := p.Suite
	plen := s.ESPPayloadLen(len(inner) + ethHdr + fcs)
	pt := make([]byte, plen)
	copy(pt, inner)
	pad := plen - len(inner) - 2
	for i := range pad {
		pt[len(inner)+i] = byte(i + 1) // RFC 4303 §2.4: 1, 2, 3, ...
	}
	pt[plen-2] = byte(pad)
	pt[plen-1] = 4 // next header: IPv4

	hdr := make([]byte, espHdr+s.IVLen)
	binary.BigEndian.PutUint32(hdr[0:4], sa.SPIIn)
	binary.BigEndian.PutUint32(hdr[4:8], seq)
	iv := hdr[espHdr:]
	// any IV will do for a receiver; unique per SA and packet here
	binary.BigEndian.PutUint64(iv[len(iv)-8:], uint64(seq)<<16|uint64(sa.Index&0xffff))

	keyLen := s.EncKeyLen - s.SaltLen
	block, err := aes.NewCipher(sa.EncKey[:keyLen])
	if err != nil {
		return nil, err
	}
	if s.AEAD() {
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		nonce := append(append([]byte(nil), sa.EncKey[keyLen:]...), iv...)
		return gcm.Seal(hdr, nonce, pt, hdr[:espHdr]), nil
	}
	if s.IntKeyLen != 32 || s.ICVLen != 16 {
		return nil, fmt.Errorf("seal: integrity of suite %s not supported here", s.Name)
	}
	ct := make([]byte, len(pt))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, pt)
	out := append(hdr, ct...)
	mac := hmac.New(sha256.New, sa.IntKey)
	mac.Write(out)
	return mac.Sum(out)[:len(out)+s.ICVLen], nil
}

// WritePcap writes frames to a pcap file (microsecond, Ethernet).
func WritePcap(path string, frames [][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	var gh [24]byte
	binary.LittleEndian.PutUint32(gh[0:4], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(gh[4:6], 2)
	binary.LittleEndian.PutUint16(gh[6:8], 4)
	binary.LittleEndian.PutUint32(gh[16:20], 65535)
	binary.LittleEndian.PutUint32(gh[20:24], 1)
	w.Write(gh[:])
	for i, fr := range frames {
		var rh [16]byte
		binary.LittleEndian.PutUint32(rh[4:8], uint32(i))
		binary.LittleEndian.PutUint32(rh[8:12], uint32(len(fr)))
		binary.LittleEndian.PutUint32(rh[12:16], uint32(len(fr)))
		w.Write(rh[:])
		w.Write(fr)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Pcap writes the pcap of a direction with Count frames spread round
// robin over the SAs: plaintext frames for outbound, the peer's ESP for
// inbound. It returns the number of frames.
func (p *Plan) Pcap(path string, m Mix, inbound bool) (int, error) {
	n := p.Count(m)
	return n, p.PcapPick(path, m, inbound, n, p.RoundRobin)
}

// PcapPick writes n frames, frame k through SA pick(k) (ESP sequence
// numbers count up per SA).
func (p *Plan) PcapPick(path string, m Mix, inbound bool, n int, pick Pick) error {
	frames := make([][]byte, n)
	seq := make([]uint32, len(p.SAs))
	for k := range frames {
		i := pick(k)
		if !inbound {
			frames[k] = p.Plaintext(m, k, i)
			continue
		}
		seq[i]++
		fr, err := p.ESP(m, k, i, seq[i])
		if err != nil {
			return err
		}
		frames[k] = fr
	}
	return WritePcap(path, frames)
}
