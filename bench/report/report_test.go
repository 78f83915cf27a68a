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
	r.RoundRatios(2, 1)
	return r
}

func TestRoundRatios(t *testing.T) {
	// round 1: swanpath 4,6 against 5,5; round 2: 3,3 against 1,3
	r := row("out", []float64{4, 6, 3, 3}, []float64{5, 5, 1, 3})
	want := []float64{5.0 / 5, 3.0 / 2}
	if len(r.VsSecgwRounds) != len(want) {
		t.Fatalf("round ratios %v, want %v", r.VsSecgwRounds, want)
	}
	for i := range want {
		if r.VsSecgwRounds[i] != want[i] {
			t.Fatalf("round ratios %v, want %v", r.VsSecgwRounds, want)
		}
	}
	// the ratio is their median, not that of the overall medians
	// (3.5 / 4 = 0.875: swanpath's slow round against ipsec-secgw's fast one)
	if r.VsSecgw != 1.25 {
		t.Fatalf("ratio %v, want the median of the round ratios, 1.25", r.VsSecgw)
	}

	// a round that one system lacks in full does not count, and one round
	// leaves the ratio of the overall medians
	r = row("out", []float64{4, 6, 3}, []float64{5, 5, 1, 3})
	if len(r.VsSecgwRounds) != 1 || r.VsSecgwRounds[0] != 1 {
		t.Fatalf("with a partial round: %v, want [1]", r.VsSecgwRounds)
	}
	if r.VsSecgw != 4.0/4 {
		t.Fatalf("with one full round: ratio %v, want 1", r.VsSecgw)
	}

	// no ipsec-secgw number: no ratios
	r = row("out", []float64{4, 6}, nil)
	r.Secgw = Measure{Error: "not supported"}
	r.VsSecgw = 0
	r.RoundRatios(2, 1)
	if r.VsSecgwRounds != nil || r.VsSecgw != 0 {
		t.Fatalf("without ipsec-secgw: %v, %v", r.VsSecgwRounds, r.VsSecgw)
	}
}

func TestCeilingRoundsAndBound(t *testing.T) {
	// the ceiling, one run per round: 10 then 4; swanpath's rounds 5 and 3
	r := row("out", []float64{4e6, 6e6, 3e6, 3e6}, []float64{5e6, 5e6, 1e6, 3e6})
	r.Ceiling = Measure{PPS: 7e6, Windows: []float64{10e6, 4e6}}
	r.Ports = Measure{PPS: 21e6}
	r.Ratios()
	r.RoundRatios(2, 1)
	want := []float64{0.5, 0.75}
	if len(r.VsCeilingRounds) != 2 || r.VsCeilingRounds[0] != want[0] || r.VsCeilingRounds[1] != want[1] {
		t.Fatalf("ceiling round ratios %v, want %v", r.VsCeilingRounds, want)
	}
	if r.VsCeiling != 0.625 {
		t.Fatalf("sp/ceiling %v, want the median of the round ratios, 0.625", r.VsCeiling)
	}
	// ports alone at 3x the ceiling's rate: crypto + ports leave 3/4
	if r.CeilingBound != 0.75 {
		t.Fatalf("bound %v, want 1 / (1 + 7/21) = 0.75", r.CeilingBound)
	}
	md := (&Results{Settings: Settings{Rounds: 2, Windows: 2, CryptoRuns: 1}, Rows: []Row{r}}).Markdown()
	for _, want := range []string{"| 0.62 (0.50–0.75) |", "### What the ports alone cost", "| 21.00 |", "| 0.75 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown lacks %q:\n%s", want, md)
		}
	}
	// without the ports' number there is no bound and no ports table
	r.Ports = Measure{Error: "dpdk-testpmd: missing"}
	r.CeilingBound = 0
	r.Ratios()
	if r.CeilingBound != 0 {
		t.Fatalf("bound %v without the ports' number", r.CeilingBound)
	}
	md = (&Results{Rows: []Row{r}}).Markdown()
	if strings.Contains(md, "### What the ports alone cost") {
		t.Errorf("a ports table without numbers:\n%s", md)
	}
	if !strings.Contains(md, "What the ports alone cost was not measured: dpdk-testpmd: missing") {
		t.Errorf("the Markdown does not say why the ports were not measured:\n%s", md)
	}
}

func TestMarkdownRatioSpreadAndSummary(t *testing.T) {
	a := row("out", []float64{4, 6, 3, 3}, []float64{5, 5, 1, 3}) // rounds 1 and 1.5
	b := row("in", []float64{3, 3, 3, 3}, []float64{4, 4, 4, 4})  // rounds 0.75 and 0.75
	// 0.996 prints as 1.00 and counts as at or above 1.00
	c := row("in", []float64{996, 996, 996, 996}, []float64{1000, 1000, 1000, 1000})
	c.Case.Suite = "cbc128-sha256"
	res := Results{Settings: Settings{Rounds: 2, Windows: 2}, Rows: []Row{a, b, c}}
	md := res.Markdown()
	for _, want := range []string{
		"| 1.25 (1.00–1.50) |",
		"| 0.75 (0.75–0.75) |",
		"| 1.00 (1.00–1.00) |",
		"over the 3 cases with both numbers: median 1.00; 2 of 3 at or above 1.00; lowest 0.75 (`in-gcm128-64-1sa-esp`), highest 1.25 (`out-gcm128-64-1sa-esp`)",
		"lie 0.00 apart (median over the cases; highest minus lowest): the noise",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown lacks %q:\n%s", want, md)
		}
	}
}
