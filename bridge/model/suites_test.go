package model

import (
	"errors"
	"testing"
)

func TestSuite(t *testing.T) {
	key := func(n int) Key { return make(Key, n) }
	for _, tc := range []struct {
		name            string
		enc, integ      uint16
		encKey, intKey  int
		err             error
		spEnc           SPEnc
		spAuth          SPAuth
		keyLen, icv     int
		keyBits, saltLn int
	}{
		{"AES-GCM-16 128", EncrAESGCM16, IntegNone, 20, 0, nil, SPEncAESGCM, SPAuthNone, 16, 16, 128, 4},
		{"AES-GCM-8 256", EncrAESGCM8, IntegNone, 36, 0, nil, SPEncAESGCM, SPAuthNone, 32, 8, 256, 4},
		{"AES-GCM-12 192", EncrAESGCM12, IntegNone, 28, 0, nil, SPEncAESGCM, SPAuthNone, 24, 12, 192, 4},
		{"ChaCha20-Poly1305", EncrChaCha20Poly1305, IntegNone, 36, 0, nil, SPEncChaCha20Poly1305, SPAuthNone, 32, 16, 256, 4},
		{"AES-GMAC", EncrNullAESGMAC, IntegNone, 20, 0, nil, SPEncAESGMAC, SPAuthNone, 16, 16, 128, 4},
		{"AES-CBC SHA1", EncrAESCBC, IntegHMACSHA1_96, 16, 20, nil, SPEncAESCBC, SPAuthHMACSHA1, 16, 12, 128, 0},
		{"AES-CBC SHA256", EncrAESCBC, IntegHMACSHA256_128, 32, 32, nil, SPEncAESCBC, SPAuthHMACSHA256, 32, 16, 256, 0},
		{"AES-CTR SHA384", EncrAESCTR, IntegHMACSHA384_192, 20, 48, nil, SPEncAESCTR, SPAuthHMACSHA384, 16, 24, 128, 4},
		{"NULL SHA512", EncrNull, IntegHMACSHA512_256, 0, 64, nil, SPEncNull, SPAuthHMACSHA512, 0, 32, 0, 0},
		{"3DES", 3, IntegHMACSHA1_96, 24, 20, ErrUnsupported, 0, 0, 0, 0, 192, 0},
		{"private ID", 1031, IntegHMACSHA1_96, 16, 20, ErrUnsupported, 0, 0, 0, 0, 128, 0},
		{"GCM without salt", EncrAESGCM16, IntegNone, 16, 0, ErrInvalid, 0, 0, 0, 0, 96, 4},
		{"GCM with integrity", EncrAESGCM16, IntegHMACSHA256_128, 20, 32, ErrInvalid, 0, 0, 0, 0, 128, 4},
		{"CBC with MD5", EncrAESCBC, 1, 16, 16, ErrUnsupported, 0, 0, 0, 0, 128, 0},
		{"CBC without integrity", EncrAESCBC, IntegNone, 16, 0, ErrUnsupported, 0, 0, 0, 0, 128, 0},
		{"CBC short HMAC key", EncrAESCBC, IntegHMACSHA256_128, 16, 20, ErrInvalid, 0, 0, 0, 0, 128, 0},
		{"ChaCha20 128-bit key", EncrChaCha20Poly1305, IntegNone, 20, 0, ErrInvalid, 0, 0, 0, 0, 128, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sa := SA{EncAlg: tc.enc, IntAlg: tc.integ, EncKey: key(tc.encKey), IntKey: key(tc.intKey)}
			if b := KeyBits(tc.enc, tc.encKey); b != tc.keyBits {
				t.Errorf("KeyBits %d, want %d", b, tc.keyBits)
			}
			s, err := sa.Suite()
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Suite: %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.SPEnc != tc.spEnc || s.Integ.SPAuth != tc.spAuth || s.KeyLen != tc.keyLen || s.ICV != tc.icv || s.SaltLen != tc.saltLn {
				t.Errorf("suite %+v", s)
			}
		})
	}
}

// Every suite the fast path carries is complete: names for swanctl,
// XFRM and logs, key lengths, and an ICV from itself (AEAD) or from
// the integrity algorithm; IDs are unique.
func TestSuiteTable(t *testing.T) {
	seen := map[uint16]bool{}
	for _, e := range Encrs {
		if seen[e.ID] {
			t.Errorf("encryption transform %d twice", e.ID)
		}
		seen[e.ID] = true
		if e.SPEnc == SPEncNone {
			continue
		}
		if e.Swanctl == "" || e.XFRM == "" || e.Name == "" || len(e.KeyLens) == 0 {
			t.Errorf("ENCR_%s incomplete: %+v", e.IANA, e)
		}
	}
	clear(seen)
	for _, a := range Integs {
		if seen[a.ID] {
			t.Errorf("integrity transform %d twice", a.ID)
		}
		seen[a.ID] = true
		if a.SPAuth != SPAuthNone && (a.Swanctl == "" || a.XFRM == "" || a.KeyLen == 0 || a.ICV == 0) {
			t.Errorf("AUTH_%s incomplete: %+v", a.IANA, a)
		}
	}
	for id, want := range map[uint16]string{
		EncrAESGCM16: "rfc4106(gcm(aes))", EncrAESCBC: "cbc(aes)", EncrAESCTR: "rfc3686(ctr(aes))",
		EncrNull: "ecb(cipher_null)", EncrNullAESGMAC: "rfc4543(gcm(aes))",
		EncrChaCha20Poly1305: "rfc7539esp(chacha20,poly1305)",
	} {
		if e, _ := LookupEncr(id); e.XFRM != want {
			t.Errorf("%s: XFRM %q, want %q", EncrName(id), e.XFRM, want)
		}
	}
	if a, _ := LookupInteg(IntegHMACSHA256_128); a.XFRM != "hmac(sha256)" {
		t.Errorf("AUTH_HMAC_SHA2_256_128: XFRM %q", a.XFRM)
	}
	for id, want := range map[uint16]string{3: "ENCR_3DES (3)", EncrAESGCM16: "ENCR_AES_GCM_16 (20)", 1031: "encryption transform 1031"} {
		if n := EncrName(id); n != want {
			t.Errorf("EncrName(%d) = %q, want %q", id, n, want)
		}
	}
	if n := IntegName(1); n != "AUTH_HMAC_MD5_96 (1)" {
		t.Errorf("IntegName(1) = %q", n)
	}
}
