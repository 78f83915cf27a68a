package main

import (
	"testing"

	"github.com/swanpath/swanpath/bridge/model"
)

// swanpathctl shows an SA's algorithms as ip xfrm state does.
func TestSuiteNames(t *testing.T) {
	for _, tc := range []struct {
		enc, integ      uint16
		aead, cip, auth string
		icvBits         int
	}{
		{model.EncrAESGCM16, model.IntegNone, "rfc4106(gcm(aes))", "", "", 128},
		{model.EncrAESGCM8, model.IntegNone, "rfc4106(gcm(aes))", "", "", 64},
		{model.EncrNullAESGMAC, model.IntegNone, "rfc4543(gcm(aes))", "", "", 128},
		{model.EncrChaCha20Poly1305, model.IntegNone, "rfc7539esp(chacha20,poly1305)", "", "", 128},
		{model.EncrAESCBC, model.IntegHMACSHA256_128, "", "cbc(aes)", "hmac(sha256)", 128},
		{model.EncrAESCTR, model.IntegHMACSHA1_96, "", "rfc3686(ctr(aes))", "hmac(sha1)", 96},
		{model.EncrNull, model.IntegHMACSHA512_256, "", "ecb(cipher_null)", "hmac(sha512)", 256},
		{3, 1, "", "transform-3", "", 0},
	} {
		aead, cip, auth, icv := suiteNames(tc.enc, tc.integ)
		if aead != tc.aead || cip != tc.cip || auth != tc.auth || icv != tc.icvBits {
			t.Errorf("%s/%s: %q %q %q %d, want %q %q %q %d", model.EncrName(tc.enc), model.IntegName(tc.integ),
				aead, cip, auth, icv, tc.aead, tc.cip, tc.auth, tc.icvBits)
		}
	}
}

// swanpathctl sa names a route-based SA's interface as the fast path binds
// it: the if_id first, else a whole mark; a policy-based SA has none.
func TestViewsRouteBased(t *testing.T) {
	v := &views{ifcs: []interfaceConf{{Name: "ipsec0", IfID: 20}, {Name: "vti7", Mark: 7}}}
	for _, tc := range []struct {
		mark, mask, ifID uint32
		name, markStr    string
	}{
		{0, 0, 0, "", ""},
		{0, 0, 20, "ipsec0", ""},
		{7, 0xffffffff, 0, "vti7", "0x7/0xffffffff"},
		{7, 0xffffffff, 20, "ipsec0", "0x7/0xffffffff"},
		{7, 0xff, 0, "", "0x7/0xff"}, // not a whole mark
		{0, 0, 21, "", ""},           // no such interface
	} {
		name, id, m := v.routeBased(tc.mark, tc.mask, tc.ifID)
		if name != tc.name || id != tc.ifID || m != tc.markStr {
			t.Errorf("mark 0x%x/0x%x if_id %d: %q %d %q, want %q %d %q", tc.mark, tc.mask, tc.ifID, name, id, m, tc.name, tc.ifID, tc.markStr)
		}
	}
}
