package lab

import (
	"strings"
	"testing"
)

// TestWithoutKeys: the failure report of an XFRM gateway shows the
// kernel's SAs without a byte of their keys.
func TestWithoutKeys(t *testing.T) {
	in := `src 192.0.2.1 dst 198.51.100.2
	proto esp spi 0xc1a2b3c4 reqid 16389 mode tunnel
	replay-window 0 flag af-unspec
	aead rfc4106(gcm(aes)) 0x00112233445566778899aabbccddeeff01020304 128
	enc cbc(aes) 0xdeadbeefdeadbeefdeadbeefdeadbeef
	auth-trunc hmac(sha256) 0xcafebabecafebabecafebabecafebabe 128
	encap type espinudp sport 4500 dport 4500 addr 0.0.0.0
	lifetime current:
	  1234(bytes), 10(packets)`
	out := withoutKeys(in)
	for _, key := range []string{"0x0011", "deadbeef", "cafebabe"} {
		if strings.Contains(out, key) {
			t.Errorf("key material %q left in:\n%s", key, out)
		}
	}
	for _, keep := range []string{"spi 0xc1a2b3c4", "aead rfc4106(gcm(aes)) [key cut]", "auth-trunc hmac(sha256) [key cut]", "1234(bytes), 10(packets)", "encap type espinudp"} {
		if !strings.Contains(out, keep) {
			t.Errorf("lost %q:\n%s", keep, out)
		}
	}
}
