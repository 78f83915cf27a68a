package model

import (
	"fmt"
	"slices"
)

// ESP suites: every fact about an algorithm sits in one row of Encrs or
// Integs, and everything else is derived from them — the IANA names in
// error messages, the check of an SA's transforms and key lengths (Suite),
// the fast path's enum values (fastpath/suites.go, whose
// suite_contract_test.go checks them against dp.h without EAL), the
// kernel-style names swanpathctl shows and the XFRM mirror will parse,
// and the key bits the engine displays.
//
// The IDs are IKEv2 transform IDs (RFC 7296 §3.3.2, IANA "Transform Type
// 1" and "Transform Type 3"), which strongSwan's encryption_algorithm_t
// and integrity_algorithm_t use too; the XFRM names are the Linux crypto
// API's as XFRM takes them (strongSwan's kernel_netlink_ipsec.c,
// encryption_algs and integrity_algs).

// SPEnc is the fast path's enum sp_enc (fastpath/dp.h); 0 is no cipher
// the fast path carries.
type SPEnc uint8

const (
	SPEncNone SPEnc = iota
	SPEncAESGCM
	SPEncChaCha20Poly1305
	SPEncAESGMAC
	SPEncAESCBC
	SPEncAESCTR
	SPEncNull
)

// SPAuth is the fast path's enum sp_auth (fastpath/dp.h).
type SPAuth uint8

const (
	SPAuthNone SPAuth = iota
	SPAuthHMACSHA1
	SPAuthHMACSHA256
	SPAuthHMACSHA384
	SPAuthHMACSHA512
)

// Encr is one encryption transform (IKEv2 transform type 1). Only rows
// with an SPEnc are carried by the fast path; the others are there for
// their IANA names.
type Encr struct {
	ID   uint16
	IANA string // without ENCR_: "AES_GCM_16"
	// strongSwan proposal keyword (swanctl.conf esp_proposals), %d
	// standing for the key bits where they vary: "aes%dgcm16"
	Swanctl string
	XFRM    string // Linux crypto API name in XFRM: "rfc4106(gcm(aes))"
	Name    string // the fast path's short name (logs, errors): "aes-gcm"
	KeyLens []int  // cipher key bytes allowed, salt excluded
	SaltLen int    // salt (AEAD, GMAC) or nonce (CTR) at the end of the key material
	ICV     int    // AEAD and GMAC: ICV bytes; 0: the integrity algorithm's
	SPEnc   SPEnc
}

// AEAD says whether the transform authenticates by itself (AEAD or GMAC:
// no integrity transform with it).
func (e Encr) AEAD() bool { return e.ICV != 0 }

// Integ is one integrity transform (IKEv2 transform type 3).
type Integ struct {
	ID      uint16
	IANA    string // without AUTH_: "HMAC_SHA2_256_128"
	Swanctl string // strongSwan proposal keyword: "sha256"
	XFRM    string // "hmac(sha256)"
	KeyLen  int    // HMAC key bytes
	ICV     int    // truncated ICV bytes
	SPAuth  SPAuth
}

// Encrs lists the encryption transforms by ID.
var Encrs = []Encr{
	{ID: 1, IANA: "DES_IV64"}, {ID: 2, IANA: "DES"}, {ID: 3, IANA: "3DES"}, {ID: 4, IANA: "RC5"},
	{ID: 5, IANA: "IDEA"}, {ID: 6, IANA: "CAST"}, {ID: 7, IANA: "BLOWFISH"},
	{ID: 8, IANA: "3IDEA"}, {ID: 9, IANA: "DES_IV32"},
	{ID: EncrNull, IANA: "NULL", Swanctl: "null", XFRM: "ecb(cipher_null)", Name: "null",
		KeyLens: []int{0}, SPEnc: SPEncNull},
	{ID: EncrAESCBC, IANA: "AES_CBC", Swanctl: "aes%d", XFRM: "cbc(aes)", Name: "aes-cbc",
		KeyLens: aesKeys, SPEnc: SPEncAESCBC},
	{ID: EncrAESCTR, IANA: "AES_CTR", Swanctl: "aes%dctr", XFRM: "rfc3686(ctr(aes))", Name: "aes-ctr",
		KeyLens: aesKeys, SaltLen: 4, SPEnc: SPEncAESCTR},
	{ID: 14, IANA: "AES_CCM_8"}, {ID: 15, IANA: "AES_CCM_12"}, {ID: 16, IANA: "AES_CCM_16"},
	{ID: EncrAESGCM8, IANA: "AES_GCM_8", Swanctl: "aes%dgcm8", XFRM: "rfc4106(gcm(aes))", Name: "aes-gcm",
		KeyLens: aesKeys, SaltLen: 4, ICV: 8, SPEnc: SPEncAESGCM},
	{ID: EncrAESGCM12, IANA: "AES_GCM_12", Swanctl: "aes%dgcm12", XFRM: "rfc4106(gcm(aes))", Name: "aes-gcm",
		KeyLens: aesKeys, SaltLen: 4, ICV: 12, SPEnc: SPEncAESGCM},
	{ID: EncrAESGCM16, IANA: "AES_GCM_16", Swanctl: "aes%dgcm16", XFRM: "rfc4106(gcm(aes))", Name: "aes-gcm",
		KeyLens: aesKeys, SaltLen: 4, ICV: 16, SPEnc: SPEncAESGCM},
	{ID: EncrNullAESGMAC, IANA: "NULL_AUTH_AES_GMAC", Swanctl: "aes%dgmac", XFRM: "rfc4543(gcm(aes))", Name: "aes-gmac",
		KeyLens: aesKeys, SaltLen: 4, ICV: 16, SPEnc: SPEncAESGMAC},
	{ID: 23, IANA: "CAMELLIA_CBC"}, {ID: 24, IANA: "CAMELLIA_CTR"},
	{ID: 25, IANA: "CAMELLIA_CCM_8"}, {ID: 26, IANA: "CAMELLIA_CCM_12"},
	{ID: 27, IANA: "CAMELLIA_CCM_16"},
	{ID: EncrChaCha20Poly1305, IANA: "CHACHA20_POLY1305", Swanctl: "chacha20poly1305", XFRM: "rfc7539esp(chacha20,poly1305)",
		Name: "chacha20-poly1305", KeyLens: []int{32}, SaltLen: 4, ICV: 16, SPEnc: SPEncChaCha20Poly1305},
}

// aesKeys are AES's key lengths: 128, 192 and 256 bits.
var aesKeys = []int{16, 24, 32}

// Integs lists the integrity transforms by ID.
var Integs = []Integ{
	{ID: IntegNone, IANA: "NONE"}, {ID: 1, IANA: "HMAC_MD5_96"},
	{ID: IntegHMACSHA1_96, IANA: "HMAC_SHA1_96", Swanctl: "sha1", XFRM: "hmac(sha1)",
		KeyLen: 20, ICV: 12, SPAuth: SPAuthHMACSHA1},
	{ID: 3, IANA: "DES_MAC"}, {ID: 4, IANA: "KPDK_MD5"}, {ID: 5, IANA: "AES_XCBC_96"},
	{ID: 6, IANA: "HMAC_MD5_128"}, {ID: 7, IANA: "HMAC_SHA1_160"}, {ID: 8, IANA: "AES_CMAC_96"},
	{ID: 9, IANA: "AES_128_GMAC"}, {ID: 10, IANA: "AES_192_GMAC"}, {ID: 11, IANA: "AES_256_GMAC"},
	{ID: IntegHMACSHA256_128, IANA: "HMAC_SHA2_256_128", Swanctl: "sha256", XFRM: "hmac(sha256)",
		KeyLen: 32, ICV: 16, SPAuth: SPAuthHMACSHA256},
	{ID: IntegHMACSHA384_192, IANA: "HMAC_SHA2_384_192", Swanctl: "sha384", XFRM: "hmac(sha384)",
		KeyLen: 48, ICV: 24, SPAuth: SPAuthHMACSHA384},
	{ID: IntegHMACSHA512_256, IANA: "HMAC_SHA2_512_256", Swanctl: "sha512", XFRM: "hmac(sha512)",
		KeyLen: 64, ICV: 32, SPAuth: SPAuthHMACSHA512},
}

// LookupEncr finds an encryption transform by ID.
func LookupEncr(id uint16) (Encr, bool) {
	i := slices.IndexFunc(Encrs, func(e Encr) bool { return e.ID == id })
	if i < 0 {
		return Encr{}, false
	}
	return Encrs[i], true
}

// LookupInteg finds an integrity transform by ID.
func LookupInteg(id uint16) (Integ, bool) {
	i := slices.IndexFunc(Integs, func(a Integ) bool { return a.ID == id })
	if i < 0 {
		return Integ{}, false
	}
	return Integs[i], true
}

// EncrName is "ENCR_3DES (3)" for encryption transform 3; IDs outside
// IANA's list (strongSwan's private ones among them) are only numbers.
func EncrName(id uint16) string {
	if e, ok := LookupEncr(id); ok {
		return fmt.Sprintf("ENCR_%s (%d)", e.IANA, id)
	}
	return fmt.Sprintf("encryption transform %d", id)
}

// IntegName is "AUTH_HMAC_MD5_96 (1)" for integrity transform 1.
func IntegName(id uint16) string {
	if a, ok := LookupInteg(id); ok {
		return fmt.Sprintf("AUTH_%s (%d)", a.IANA, id)
	}
	return fmt.Sprintf("integrity transform %d", id)
}

// Suite is how an SA's transforms map onto the fast path.
type Suite struct {
	Encr
	Integ  Integ // the zero Integ with an AEAD
	KeyLen int   // cipher key bytes, salt excluded
	ICV    int   // bytes: the AEAD's or the integrity algorithm's
}

// Suite says whether the fast path carries sa's transforms with the key
// lengths given, and how.
func (sa *SA) Suite() (Suite, error) {
	var s Suite
	e, ok := LookupEncr(sa.EncAlg)
	if !ok || e.SPEnc == SPEncNone {
		return s, fmt.Errorf("%s: %w by the fast path (AES-GCM, AES-CBC, AES-CTR, ChaCha20-Poly1305, AES-GMAC and NULL are)", EncrName(sa.EncAlg), ErrUnsupported)
	}
	s.Encr = e
	s.KeyLen = len(sa.EncKey) - e.SaltLen
	if !slices.Contains(e.KeyLens, s.KeyLen) {
		return s, fmt.Errorf("%s key material of %d bytes: %w", e.Name, len(sa.EncKey), ErrInvalid)
	}
	if e.AEAD() {
		if sa.IntAlg != IntegNone {
			return s, fmt.Errorf("%s with %s: %w", e.Name, IntegName(sa.IntAlg), ErrInvalid)
		}
		s.ICV = e.ICV
		return s, nil
	}
	in, ok := LookupInteg(sa.IntAlg)
	if !ok || in.SPAuth == SPAuthNone {
		return s, fmt.Errorf("%s with %s: %w by the fast path (HMAC-SHA1-96 and HMAC-SHA2 are)", e.Name, IntegName(sa.IntAlg), ErrUnsupported)
	}
	if len(sa.IntKey) != in.KeyLen {
		return s, fmt.Errorf("integrity key of %d bytes (want %d): %w", len(sa.IntKey), in.KeyLen, ErrInvalid)
	}
	s.Integ, s.ICV = in, in.ICV
	return s, nil
}

// KeyBits is the cipher key's length in bits, the salt or nonce left out,
// for display; an unknown transform's key material counts whole.
func KeyBits(encAlg uint16, keyMaterial int) int {
	e, _ := LookupEncr(encAlg)
	return (keyMaterial - e.SaltLen) * 8
}
