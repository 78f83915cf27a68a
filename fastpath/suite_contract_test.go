package fastpath

import (
	"testing"

	"github.com/swanpath/swanpath/bridge/model"
)

// model's mirror of enum sp_enc and enum sp_auth (dp.h) holds the C
// values, and every suite the table gives the fast path names one of
// them. No EAL needed.
func TestSuiteEnumsMatchC(t *testing.T) {
	for v, c := range cEncs {
		if int(v) != c {
			t.Errorf("model.SPEnc %d is %d in enum sp_enc", v, c)
		}
	}
	for v, c := range cAuths {
		if int(v) != c {
			t.Errorf("model.SPAuth %d is %d in enum sp_auth", v, c)
		}
	}
	for _, e := range model.Encrs {
		if _, ok := cEncs[e.SPEnc]; e.SPEnc != model.SPEncNone && !ok {
			t.Errorf("ENCR_%s: sp_enc %d is not in dp.h", e.IANA, e.SPEnc)
		}
	}
	for _, a := range model.Integs {
		if _, ok := cAuths[a.SPAuth]; !ok {
			t.Errorf("AUTH_%s: sp_auth %d is not in dp.h", a.IANA, a.SPAuth)
		}
	}
}
