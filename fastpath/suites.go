package fastpath

import (
	"fmt"
	"slices"

	"github.com/swanpath/swanpath/bridge/model"
)

// #include "dp.h"
import "C"

// suite is how one IKEv2 transform pair maps onto the fast path: the cipher
// (with how many bytes of the key material are salt or nonce) and the
// integrity algorithm with its key length and truncated ICV.
type suite struct {
	enc     C.uint8_t
	auth    C.uint8_t
	keyLens []int // cipher key lengths allowed, salt excluded
	saltLen int   // salt (AEAD, GMAC) or nonce (CTR) at the end of the key
	icv     int   // AEAD/GMAC ICV; 0 = the integrity algorithm's
	name    string
}

// ciphers, by IKEv2 transform type 1 ID (RFC 7296 §3.3.2 and IANA).
var ciphers = map[uint16]suite{
	model.EncrAESGCM8:          {enc: C.SP_ENC_AES_GCM, keyLens: []int{16, 24, 32}, saltLen: 4, icv: 8, name: "aes-gcm"},
	model.EncrAESGCM12:         {enc: C.SP_ENC_AES_GCM, keyLens: []int{16, 24, 32}, saltLen: 4, icv: 12, name: "aes-gcm"},
	model.EncrAESGCM16:         {enc: C.SP_ENC_AES_GCM, keyLens: []int{16, 24, 32}, saltLen: 4, icv: 16, name: "aes-gcm"},
	model.EncrChaCha20Poly1305: {enc: C.SP_ENC_CHACHA20_POLY1305, keyLens: []int{32}, saltLen: 4, icv: 16, name: "chacha20-poly1305"},
	model.EncrNullAESGMAC:      {enc: C.SP_ENC_AES_GMAC, keyLens: []int{16, 24, 32}, saltLen: 4, icv: 16, name: "aes-gmac"},
	model.EncrAESCBC:           {enc: C.SP_ENC_AES_CBC, keyLens: []int{16, 24, 32}, name: "aes-cbc"},
	model.EncrAESCTR:           {enc: C.SP_ENC_AES_CTR, keyLens: []int{16, 24, 32}, saltLen: 4, name: "aes-ctr"},
	model.EncrNull:             {enc: C.SP_ENC_NULL, keyLens: []int{0}, name: "null"},
}

// integrity algorithms, by IKEv2 transform type 3 ID: HMAC key and ICV length.
var integs = map[uint16]struct {
	auth        C.uint8_t
	keyLen, icv int
}{
	model.IntegHMACSHA1_96:    {C.SP_AUTH_HMAC_SHA1, 20, 12},
	model.IntegHMACSHA256_128: {C.SP_AUTH_HMAC_SHA256, 32, 16},
	model.IntegHMACSHA384_192: {C.SP_AUTH_HMAC_SHA384, 48, 24},
	model.IntegHMACSHA512_256: {C.SP_AUTH_HMAC_SHA512, 64, 32},
}

// params is what checkSA derives for sp_sa_params.
type params struct {
	suite
	keyLen, authKeyLen int
}

// checkSA says whether this build of the fast path can carry sa, and how.
func checkSA(sa *model.SA) (params, error) {
	var p params
	if err := sa.Validate(); err != nil {
		return p, err
	}
	switch {
	case sa.Mode != model.ModeTunnel && sa.Mode != model.ModeTransport:
		return p, fmt.Errorf("%s mode: %w (tunnel and transport only)", sa.Mode, model.ErrUnsupported)
	case sa.Mode == model.ModeTransport && sa.Encap:
		return p, fmt.Errorf("transport mode with UDP encapsulation: %w", model.ErrUnsupported)
	case sa.Src.Is4() != sa.Dst.Is4():
		return p, fmt.Errorf("outer addresses %s and %s of different families: %w", sa.Src, sa.Dst, model.ErrInvalid)
	}
	s, ok := ciphers[sa.EncAlg]
	if !ok {
		return p, fmt.Errorf("%s: %w by the fast path (AES-GCM, AES-CBC, AES-CTR, ChaCha20-Poly1305, AES-GMAC and NULL are)", model.EncrName(sa.EncAlg), model.ErrUnsupported)
	}
	p.suite = s
	p.keyLen = len(sa.EncKey) - s.saltLen
	if !slices.Contains(s.keyLens, p.keyLen) {
		return p, fmt.Errorf("%s key material of %d bytes: %w", s.name, len(sa.EncKey), model.ErrInvalid)
	}
	aead := s.icv != 0
	switch {
	case aead && sa.IntAlg != model.IntegNone:
		return p, fmt.Errorf("%s with %s: %w", s.name, model.IntegName(sa.IntAlg), model.ErrInvalid)
	case !aead:
		in, ok := integs[sa.IntAlg]
		if !ok {
			return p, fmt.Errorf("%s with %s: %w by the fast path (HMAC-SHA1-96 and HMAC-SHA2 are)", s.name, model.IntegName(sa.IntAlg), model.ErrUnsupported)
		}
		if len(sa.IntKey) != in.keyLen {
			return p, fmt.Errorf("integrity key of %d bytes (want %d): %w", len(sa.IntKey), in.keyLen, model.ErrInvalid)
		}
		p.auth, p.icv, p.authKeyLen = in.auth, in.icv, in.keyLen
	}
	return p, nil
}
