package model

import (
	"errors"
	"net/netip"
	"testing"
)

// TestValidateRouted: a consumer of route-based SAs accepts an if_id and a
// whole mark, and refuses a partial mask; Validate refuses both kinds.
func TestValidateRouted(t *testing.T) {
	base := func() SA {
		return SA{SAID: SAID{Dst: netip.MustParseAddr("192.0.2.2"), SPI: 0x100, Proto: ProtoESP},
			Src: netip.MustParseAddr("192.0.2.1")}
	}
	cases := []struct {
		name             string
		mark, mask, ifID uint32
		wantRouted       bool // ValidateRouted accepts
	}{
		{"policy-based", 0, 0, 0, true},
		{"if_id", 0, 0, 20, true},
		{"whole mark", 20, 0xffffffff, 0, true},
		{"mark and if_id", 20, 0xffffffff, 20, true},
		{"partial mask", 20, 0xff, 0, false},
		{"mark 0 with mask", 0, 0xffffffff, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sa := base()
			sa.Mark, sa.MarkMask, sa.IfID = c.mark, c.mask, c.ifID
			err := sa.ValidateRouted()
			if (err == nil) != c.wantRouted || (err != nil && !errors.Is(err, ErrUnsupported)) {
				t.Errorf("SA ValidateRouted = %v, want ok=%v", err, c.wantRouted)
			}
			p := Policy{PolicyID: PolicyID{Mark: c.mark, MarkMask: c.mask, IfID: c.ifID}}
			if perr := p.ValidateRouted(); (perr == nil) != c.wantRouted {
				t.Errorf("policy ValidateRouted = %v, want ok=%v", perr, c.wantRouted)
			}
			rb := RouteBased(c.mark, c.mask, c.ifID)
			if verr := sa.Validate(); (verr == nil) == rb {
				t.Errorf("Validate = %v for route-based=%v: want refused exactly when route-based", verr, rb)
			}
		})
	}
}
