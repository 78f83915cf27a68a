package xfrm

import (
	"fmt"

	"github.com/swanpath/swanpath/bridge/model"
)

// The kernel names ESP algorithms by their crypto API names (the names
// `ip xfrm state` prints; see net/xfrm/xfrm_algo.c), and gives them back in
// dumps and notifications under the canonical name of its algorithm table,
// whatever alias the IKE daemon used. The model speaks IKEv2 transform IDs;
// bridge/model's suite table holds both.

// aeadAlg is the AEAD transform (XFRMA_ALG_AEAD) of that name and ICV.
func aeadAlg(name string, icvBits uint32) (uint16, error) {
	known := false
	for _, e := range model.Encrs {
		if name == "" || e.XFRM != name || !e.AEAD() {
			continue
		}
		known = true
		if uint32(e.ICV)*8 == icvBits {
			return e.ID, nil
		}
	}
	if known {
		return 0, fmt.Errorf("AEAD %q with a %d-bit ICV: %w", name, icvBits, model.ErrUnsupported)
	}
	return 0, fmt.Errorf("AEAD %q: %w", name, model.ErrUnsupported)
}

// cryptAlg is the cipher (XFRMA_ALG_CRYPT) of that name.
func cryptAlg(name string) (uint16, error) {
	for _, e := range model.Encrs {
		if name != "" && e.XFRM == name && !e.AEAD() {
			return e.ID, nil
		}
	}
	return 0, fmt.Errorf("cipher %q: %w", name, model.ErrUnsupported)
}

// authAlg is the integrity transform of that name and truncation. The
// kernel's own default truncation for hmac(sha256) given without
// XFRMA_ALG_AUTH_TRUNC is 96 bits (pre-RFC 4868): not an IKEv2 transform,
// so refused.
func authAlg(name string, truncBits uint32) (uint16, error) {
	if name == "digest_null" && truncBits == 0 {
		return model.IntegNone, nil
	}
	known := false
	for _, i := range model.Integs {
		if name == "" || i.XFRM != name {
			continue
		}
		known = true
		if uint32(i.ICV)*8 == truncBits {
			return i.ID, nil
		}
	}
	if known {
		return 0, fmt.Errorf("integrity %q truncated to %d bits: %w", name, truncBits, model.ErrUnsupported)
	}
	return 0, fmt.Errorf("integrity %q: %w", name, model.ErrUnsupported)
}
