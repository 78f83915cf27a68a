package report

import (
	"strings"
	"testing"

	"github.com/swanpath/swanpath/bench/sut"
)

func row(dir string, sp, sg []float64) Row {
	r := Row{
		Case:     Case{Dir: dir, Suite: "gcm128", Mix: "64", SAs: 1},
		Swanpath: Measure{PPS: sut.Median(sp), Windows: sp},
		Secgw:    Measure{PPS: sut.Median(sg), Windows: sg},
	}
	r.Ratios()
	r.RoundRatios(2)
	return r
}

func TestRoundRatios(t *testing.T) {
	// round 1: swanpath 4,6 against 5,5; round 2: 2,2 against 1,3
	r := row("out", []float64{4, 6, 2, 2}, []float64{5, 5, 1, 3})
	want := []float64{4.0 / 5, 2.0 / 1}
	if len(r.VsSecgwRounds) != len(want) {
		t.Fatalf("round ratios %v, want %v", r.VsSecgwRounds, want)
	}
	for i := range want {
		if r.VsSecgwRounds[i] != want[i] {
			t.Fatalf("round ratios %v, want %v", r.VsSecgwRounds, want)
		}
	}

	// a round that one system lacks in full does not count
	r = row("out", []float64{4, 6, 2}, []float64{5, 5, 1, 3})
	if len(r.VsSecgwRounds) != 1 || r.VsSecgwRounds[0] != 0.8 {
		t.Fatalf("with a partial round: %v, want [0.8]", r.VsSecgwRounds)
	}

	// no ipsec-secgw number: no ratios
	r = row("out", []float64{4, 6}, nil)
	r.Secgw = Measure{Error: "not supported"}
	r.RoundRatios(2)
	if r.VsSecgwRounds != nil {
		t.Fatalf("without ipsec-secgw: %v", r.VsSecgwRounds)
	}
}

func TestMarkdownRatioSpreadAndSummary(t *testing.T) {
	a := row("out", []float64{4, 6, 2, 2}, []float64{5, 5, 1, 3}) // 2/3 overall, rounds 0.8 and 2
	b := row("in", []float64{3, 3, 3, 3}, []float64{2, 2, 2, 2})  // 1.5, rounds 1.5 and 1.5
	res := Results{Settings: Settings{Rounds: 2, Windows: 2}, Rows: []Row{a, b}}
	md := res.Markdown()
	for _, want := range []string{
		"| 0.67 (0.80–2.00) |",
		"| 1.50 (1.50–1.50) |",
		"over the 2 cases with both numbers: median 0.67; 1 of 2 at or above 1.00; lowest 0.67 (`out-gcm128-64-1sa-esp`), highest 1.50 (`in-gcm128-64-1sa-esp`)",
		"lie 0.00 apart (median over the cases; highest minus lowest): the noise",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown lacks %q:\n%s", want, md)
		}
	}
}
