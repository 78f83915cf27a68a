package traffic

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/swanpath/swanpath/lab"
)

// open undoes seal the way a receiver does (RFC 4303 §3.4), independently
// of seal's code path: parse, check the ICV, decrypt, strip the trailer.
func open(t *testing.T, p *Plan, sa *SA, esp []byte) []byte {
	t.Helper()
	s := p.Suite
	if got := binary.BigEndian.Uint32(esp[0:4]); got != sa.SPIIn {
		t.Fatalf("SPI %#x, want %#x", got, sa.SPIIn)
	}
	iv := esp[8 : 8+s.IVLen]
	body := esp[8+s.IVLen:]
	keyLen := s.EncKeyLen - s.SaltLen
	block, err := aes.NewCipher(sa.EncKey[:keyLen])
	if err != nil {
		t.Fatal(err)
	}
	var pt []byte
	if s.AEAD() {
		gcm, _ := cipher.NewGCM(block)
		nonce := append(append([]byte(nil), sa.EncKey[keyLen:]...), iv...)
		pt, err = gcm.Open(nil, nonce, body, esp[0:8])
		if err != nil {
			t.Fatalf("GCM open: %v", err)
		}
	} else {
		ct, icv := body[:len(body)-s.ICVLen], body[len(body)-s.ICVLen:]
		mac := hmac.New(sha256.New, sa.IntKey)
		mac.Write(esp[:len(esp)-s.ICVLen])
		if !hmac.Equal(mac.Sum(nil)[:s.ICVLen], icv) {
			t.Fatal("HMAC-SHA256 ICV mismatch")
		}
		if len(ct)%16 != 0 {
			t.Fatalf("CBC ciphertext of %d bytes", len(ct))
		}
		pt = make([]byte, len(ct))
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	}
	if pt[len(pt)-1] != 4 {
		t.Fatalf("next header %d, want 4 (IPv4)", pt[len(pt)-1])
	}
	pad := int(pt[len(pt)-2])
	if (len(pt))%s.Align != 0 {
		t.Fatalf("payload+trailer %d bytes, not aligned to %d", len(pt), s.Align)
	}
	return pt[:len(pt)-2-pad]
}

func TestInboundESPDecrypts(t *testing.T) {
	for _, s := range Suites {
		for _, encap := range []bool{false, true} {
			for _, m := range Mixes {
				p, err := NewPlan(s, 3, encap)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(t.TempDir(), "in.pcap")
				n, err := p.Pcap(path, m, true)
				if err != nil {
					t.Fatal(err)
				}
				pkts, err := lab.ReadPcap(path)
				if err != nil {
					t.Fatal(err)
				}
				if len(pkts) != n || n%len(m.Sizes) != 0 || n < 96 {
					t.Fatalf("%s %s: %d frames read, %d written", s.Name, m.Name, len(pkts), n)
				}
				for k, pk := range pkts {
					sa, size := &p.SAs[p.RoundRobin(k)], m.Sizes[k%len(m.Sizes)]
					d := pk.Data
					if Checksum(d[14:34]) != 0 {
						t.Fatalf("frame %d: bad outer IPv4 checksum", k)
					}
					esp := d[34:]
					if encap {
						if d[23] != 17 || binary.BigEndian.Uint16(d[36:38]) != NATTPort {
							t.Fatalf("frame %d: not ESP-in-UDP to %d", k, NATTPort)
						}
						esp = d[42:]
					} else if d[23] != 50 {
						t.Fatalf("frame %d: protocol %d, want ESP", k, d[23])
					}
					inner := open(t, p, sa, esp)
					if len(inner) != size-18 {
						t.Fatalf("frame %d: inner packet of %d bytes, want %d for a %d B frame", k, len(inner), size-18, size)
					}
					if Checksum(inner[:20]) != 0 || !bytes.Equal(inner[12:16], sa.RemoteHost().AsSlice()) {
						t.Fatalf("frame %d: inner header wrong", k)
					}
				}
			}
		}
	}
}

func TestPlaintextSizes(t *testing.T) {
	p, err := NewPlan(GCM128, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	for k := range 24 {
		f := p.Plaintext(IMIX, k, k%10)
		if want := IMIX.Sizes[k%12] - 4; len(f) != want {
			t.Fatalf("frame %d: %d bytes, want %d", k, len(f), want)
		}
		if Checksum(f[14:34]) != 0 {
			t.Fatalf("frame %d: bad IPv4 checksum", k)
		}
	}
	if got := IMIX.MeanSize(); got < 353 || got > 354 {
		t.Fatalf("IMIX mean %f", got)
	}
}
