package xfrm

import (
	"fmt"

	"github.com/swanpath/swanpath/bridge/model"
)

// The kernel names ESP algorithms by their crypto API names (the names
// `ip xfrm state` prints; see net/xfrm/xfrm_algo.c), and gives them back in
// dumps and notifications under the canonical name of its algorithm table,
// whatever alias the IKE daemon used. The model speaks IKEv2 transform IDs.
//
// TODO(gostruct): the suite facts move into one table in bridge/model with
// the XFRM names; these two tables then go.

// aeadAlgs maps an AEAD name and its ICV length in bits to the transform.
var aeadAlgs = map[string]map[uint32]uint16{
	"rfc4106(gcm(aes))":             {64: model.EncrAESGCM8, 96: model.EncrAESGCM12, 128: model.EncrAESGCM16},
	"rfc4543(gcm(aes))":             {128: model.EncrNullAESGMAC},
	"rfc7539esp(chacha20,poly1305)": {128: model.EncrChaCha20Poly1305},
}

// cryptAlgs maps a cipher name (XFRMA_ALG_CRYPT) to the transform.
var cryptAlgs = map[string]uint16{
	"cbc(aes)":          model.EncrAESCBC,
	"rfc3686(ctr(aes))": model.EncrAESCTR,
	"ecb(cipher_null)":  model.EncrNull,
}

// authAlgs maps an integrity name and its truncation in bits to the
// transform. The kernel's own default truncation for hmac(sha256) given
// without XFRMA_ALG_AUTH_TRUNC is 96 bits (pre-RFC 4868): not an IKEv2
// transform, so refused.
var authAlgs = map[string]map[uint32]uint16{
	"hmac(sha1)":   {96: model.IntegHMACSHA1_96},
	"hmac(sha256)": {128: model.IntegHMACSHA256_128},
	"hmac(sha384)": {192: model.IntegHMACSHA384_192},
	"hmac(sha512)": {256: model.IntegHMACSHA512_256},
	"digest_null":  {0: model.IntegNone},
}

func aeadAlg(name string, icvBits uint32) (uint16, error) {
	m, ok := aeadAlgs[name]
	if !ok {
		return 0, fmt.Errorf("AEAD %q: %w", name, model.ErrUnsupported)
	}
	id, ok := m[icvBits]
	if !ok {
		return 0, fmt.Errorf("AEAD %q with a %d-bit ICV: %w", name, icvBits, model.ErrUnsupported)
	}
	return id, nil
}

func cryptAlg(name string) (uint16, error) {
	id, ok := cryptAlgs[name]
	if !ok {
		return 0, fmt.Errorf("cipher %q: %w", name, model.ErrUnsupported)
	}
	return id, nil
}

func authAlg(name string, truncBits uint32) (uint16, error) {
	m, ok := authAlgs[name]
	if !ok {
		return 0, fmt.Errorf("integrity %q: %w", name, model.ErrUnsupported)
	}
	id, ok := m[truncBits]
	if !ok {
		return 0, fmt.Errorf("integrity %q truncated to %d bits: %w", name, truncBits, model.ErrUnsupported)
	}
	return id, nil
}
