package lab

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// frame builds an Ethernet/IPv4 frame; l4 is everything after the IP header.
func frame(src, dst [4]byte, proto byte, l4 []byte) []byte {
	b := make([]byte, 14+20)
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(l4)))
	ip[8], ip[9] = 64, proto
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	return append(b, l4...)
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint16(b[4:6], uint16(8+len(payload)))
	return append(b, payload...)
}

func writePcap(t *testing.T, frames ...[]byte) string {
	t.Helper()
	b := make([]byte, 24)
	binary.LittleEndian.PutUint32(b[0:4], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(b[4:6], 2)
	binary.LittleEndian.PutUint16(b[6:8], 4)
	binary.LittleEndian.PutUint32(b[16:20], 65535)
	binary.LittleEndian.PutUint32(b[20:24], 1)
	for i, f := range frames {
		var rh [16]byte
		binary.LittleEndian.PutUint32(rh[0:4], uint32(1000+i))
		binary.LittleEndian.PutUint32(rh[8:12], uint32(len(f)))
		binary.LittleEndian.PutUint32(rh[12:16], uint32(len(f)))
		b = append(append(b, rh[:]...), f...)
	}
	p := filepath.Join(t.TempDir(), "t.pcap")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadPcapAndCheckWAN(t *testing.T) {
	gw, pr := [4]byte{192, 0, 2, 1}, [4]byte{192, 0, 2, 2}
	h1, h2 := [4]byte{10, 1, 0, 10}, [4]byte{10, 2, 0, 10}
	esp := append([]byte{0xc0, 0xff, 0xee, 0x01, 0, 0, 0, 1}, make([]byte, 40)...)
	ike := append([]byte{0, 0, 0, 0}, make([]byte, 40)...) // non-ESP marker
	good := [][]byte{
		frame(gw, pr, 17, udp(500, 500, make([]byte, 40))),
		frame(gw, pr, 17, udp(4500, 4500, ike)),
		frame(gw, pr, 17, udp(4500, 4500, esp)),
		frame(pr, gw, 17, udp(4500, 4500, esp)),
	}
	pkts, err := ReadPcap(writePcap(t, good...))
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) != 4 || !pkts[2].ESPinUDP || pkts[2].SPI != 0xc0ffee01 || pkts[1].ESPinUDP {
		t.Fatalf("decoded wrong: %v", pkts)
	}
	s, err := CheckWAN(pkts)
	if err != nil || s.ESPinUDP != 2 || s.IKE != 2 {
		t.Fatalf("CheckWAN = %+v, %v", s, err)
	}

	bad := append(good, frame(h1, h2, 1, make([]byte, 16)), frame(gw, pr, 50, esp))
	pkts, err = ReadPcap(writePcap(t, bad...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckWAN(pkts); err == nil {
		t.Fatal("clear ICMP and raw ESP on WAN accepted")
	} else {
		t.Log(err)
	}
}

func TestReadPcapRejectsGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.pcap")
	if err := os.WriteFile(p, []byte("not a pcap file at all, no"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPcap(p); err == nil {
		t.Fatal("garbage accepted")
	}
}
