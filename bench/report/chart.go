package report

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// panel is one plot of the chart: a suite and direction, the given SA
// count and encapsulation, the mixes side by side.
type panel struct {
	title string
	rows  []Row
}

func (r *Results) panels(sas int, encap bool) []panel {
	var out []panel
	idx := map[string]int{}
	for _, row := range r.Rows {
		if row.SAs != sas || row.Encap != encap {
			continue
		}
		key := row.Suite + "/" + row.Dir
		i, ok := idx[key]
		if !ok {
			dir := "outbound (encrypt)"
			if row.Dir == "in" {
				dir = "inbound (decrypt)"
			}
			out = append(out, panel{title: title(SuiteTitles, row.Suite) + ", " + dir})
			i = len(out) - 1
			idx[key] = i
		}
		out[i].rows = append(out[i].rows, row)
	}
	return out
}

func mppsOrZero(m Measure) float64 {
	if !m.OK() {
		return 0
	}
	return m.PPS / 1e6
}

// WriteChart draws throughput by packet size, swanpath, ipsec-secgw and
// the crypto ceiling side by side, one panel per suite and direction (one
// SA, plain ESP), with gnuplot. dir holds the data and script.
func (r *Results) WriteChart(png, dir string) error {
	ps := r.panels(1, false)
	if len(ps) == 0 {
		return fmt.Errorf("chart: no 1-SA plain ESP rows")
	}
	var sc strings.Builder
	cols := 2
	rowsN := (len(ps) + cols - 1) / cols
	if len(ps) == 1 {
		cols = 1
	}
	fmt.Fprintf(&sc, "set terminal pngcairo size %d,%d font 'sans,10'\n", 560*cols, 400*rowsN+40)
	fmt.Fprintf(&sc, "set output %q\n", png)
	fmt.Fprintf(&sc, "set multiplot layout %d,%d title %q\n", rowsN, cols,
		"Throughput on one worker core, 1 SA, tunnel IPv4 (Mpps; missing bar = not measured, see results.md)")
	sc.WriteString("set style data histogram\nset style histogram clustered gap 1\n")
	sc.WriteString("set style fill solid 0.85 border -1\nset boxwidth 0.9\nset grid ytics\n")
	sc.WriteString("set ylabel 'Mpps'\nset yrange [0:*]\nset key top right\n")
	for i, p := range ps {
		data := filepath.Join(dir, fmt.Sprintf("panel%d.dat", i))
		var d strings.Builder
		for _, row := range p.rows {
			fmt.Fprintf(&d, "%q %.3f %.3f %.3f\n", title(MixTitles, row.Mix),
				mppsOrZero(row.Swanpath), mppsOrZero(row.Secgw), mppsOrZero(row.Ceiling))
		}
		if err := os.WriteFile(data, []byte(d.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&sc, "set title %q\n", p.title)
		fmt.Fprintf(&sc, "plot %q using 2:xtic(1) title 'swanpath' lc rgb '#1f77b4', '' using 3 title 'ipsec-secgw' lc rgb '#ff7f0e', '' using 4 title 'crypto ceiling' lc rgb '#7f7f7f'\n", data)
	}
	sc.WriteString("unset multiplot\n")
	script := filepath.Join(dir, "chart.gp")
	if err := os.WriteFile(script, []byte(sc.String()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("gnuplot", script).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %w: %s", err, out)
	}
	return nil
}
