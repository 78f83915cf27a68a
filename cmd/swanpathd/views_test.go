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
