package fastpath

import "github.com/swanpath/swanpath/bridge/model"

// #include "dp.h"
import "C"

// cEncs and cAuths are dp.h's enum sp_enc and enum sp_auth, by the name
// model's mirror gives them: suite_contract_test.go checks that every
// value of model.Encrs and model.Integs is the C one (no EAL needed).
var (
	cEncs = map[model.SPEnc]int{
		model.SPEncAESGCM:           C.SP_ENC_AES_GCM,
		model.SPEncChaCha20Poly1305: C.SP_ENC_CHACHA20_POLY1305,
		model.SPEncAESGMAC:          C.SP_ENC_AES_GMAC,
		model.SPEncAESCBC:           C.SP_ENC_AES_CBC,
		model.SPEncAESCTR:           C.SP_ENC_AES_CTR,
		model.SPEncNull:             C.SP_ENC_NULL,
	}
	cAuths = map[model.SPAuth]int{
		model.SPAuthNone:       C.SP_AUTH_NONE,
		model.SPAuthHMACSHA1:   C.SP_AUTH_HMAC_SHA1,
		model.SPAuthHMACSHA256: C.SP_AUTH_HMAC_SHA256,
		model.SPAuthHMACSHA384: C.SP_AUTH_HMAC_SHA384,
		model.SPAuthHMACSHA512: C.SP_AUTH_HMAC_SHA512,
	}
)
