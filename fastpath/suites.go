package fastpath

import (
	"fmt"

	"github.com/swanpath/swanpath/bridge/model"
)

// #include "dp.h"
import "C"

// params is what checkSA derives for sp_sa_params: the suite (from
// model.Encrs and model.Integs) and its key lengths.
type params struct {
	model.Suite
	ifc int // 0, or 1 + the index of the SA's route-based interface
}

func (p params) enc() C.uint8_t  { return C.uint8_t(p.SPEnc) }
func (p params) auth() C.uint8_t { return C.uint8_t(p.Integ.SPAuth) }

// authKeyLen is the HMAC key's length, 0 with an AEAD.
func (p params) authKeyLen() int { return p.Integ.KeyLen }

// checkSA says whether this build of the fast path can carry sa, and how.
func checkSA(sa *model.SA, ifcs []InterfaceConfig) (params, error) {
	var p params
	if err := sa.ValidateRouted(); err != nil {
		return p, err
	}
	ifc, err := ifcOf(ifcs, sa.Mark, sa.MarkMask, sa.IfID)
	if err != nil {
		return p, err
	}
	p.ifc = ifc
	switch {
	case sa.Mode != model.ModeTunnel && sa.Mode != model.ModeTransport:
		return p, fmt.Errorf("%s mode: %w (tunnel and transport only)", sa.Mode, model.ErrUnsupported)
	case sa.Mode == model.ModeTransport && sa.Encap:
		return p, fmt.Errorf("transport mode with UDP encapsulation: %w", model.ErrUnsupported)
	case sa.Src.Is4() != sa.Dst.Is4():
		return p, fmt.Errorf("outer addresses %s and %s of different families: %w", sa.Src, sa.Dst, model.ErrInvalid)
	}
	s, err := sa.Suite()
	p.Suite = s
	return p, err
}
