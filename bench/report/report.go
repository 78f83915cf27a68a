// Package report holds the benchmark's results and writes them: a JSON
// file with everything measured, a Markdown table, and a PNG chart.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/swanpath/swanpath/bench/sut"
)

// Case is one configuration of offered traffic.
type Case struct {
	Dir   string `json:"dir"`   // "out" (encrypt) or "in" (decrypt)
	Suite string `json:"suite"` // traffic.Suite.Name
	Mix   string `json:"mix"`   // traffic.Mix.Name
	SAs   int    `json:"sas"`
	Encap bool   `json:"udp_encap"`
}

func (c Case) String() string {
	e := "esp"
	if c.Encap {
		e = "udp"
	}
	return fmt.Sprintf("%s-%s-%s-%dsa-%s", c.Dir, c.Suite, c.Mix, c.SAs, e)
}

// Measure is one system's throughput on one case. Error says why there is
// no number (then the rates are zero).
type Measure struct {
	PPS          float64   `json:"pps"` // median of the windows
	Windows      []float64 `json:"windows_pps,omitempty"`
	Gbps         float64   `json:"gbps"`
	CyclesPerPkt float64   `json:"cycles_per_packet"`
	Error        string    `json:"error,omitempty"`
}

// OK reports whether the measure has a number.
func (m Measure) OK() bool { return m.Error == "" && m.PPS > 0 }

// Row is one case with the three systems side by side.
type Row struct {
	Case
	MeanFrame  float64 `json:"mean_frame_bytes"` // FCS included
	CryptoDev  string  `json:"crypto_dev"`       // where swanpathd ran the SAs
	CryptoMode string  `json:"crypto_mode"`
	Swanpath   Measure `json:"swanpath"`
	Secgw      Measure `json:"ipsec_secgw"`
	Ceiling    Measure `json:"ceiling"`
	// dpdk-testpmd io-forwarding the same pcap into the same null port:
	// the harness's own cost per frame, no IPsec
	Ports Measure `json:"ports_alone"`
	// swanpath / ipsec-secgw (with two rounds or more: the median of the
	// per-round ratios) and swanpath / ceiling, by packet rate
	VsSecgw   float64 `json:"swanpath_vs_ipsec_secgw,omitempty"`
	VsCeiling float64 `json:"swanpath_vs_ceiling,omitempty"`
	// an estimate of the highest share of the ceiling a fast path could
	// reach on these ports: one that spent on each frame only the crypto,
	// at the ceiling's rate, and what the ports alone cost
	// (1 / (1 + ceiling / ports))
	CeilingBound float64 `json:"ceiling_share_bound,omitempty"`
	// swanpath / ipsec-secgw in each round alone (the two ran back to
	// back): how far the machine's noise moves the ratio
	VsSecgwRounds []float64 `json:"swanpath_vs_ipsec_secgw_rounds,omitempty"`
	// swanpath / ceiling in each round alone (the ceiling measured right
	// after the two systems)
	VsCeilingRounds []float64 `json:"swanpath_vs_ceiling_rounds,omitempty"`
	// SAs that carried packets in swanpathd (every one should)
	SAsUsed int `json:"swanpath_sas_used,omitempty"`
	// swanpathd's nonzero drop counters over the whole run
	Drops map[string]uint64 `json:"swanpath_drops,omitempty"`
}

// Fill computes the derived numbers of a measure from its windows.
func (m *Measure) Fill(meanFrame, tscHz float64) {
	if m.PPS <= 0 {
		return
	}
	m.Gbps = m.PPS * meanFrame * 8 / 1e9
	if tscHz > 0 {
		m.CyclesPerPkt = tscHz / m.PPS
	}
}

// Ratios fills VsSecgw, VsCeiling and CeilingBound.
func (r *Row) Ratios() {
	if r.Ports.OK() && r.Ceiling.OK() {
		r.CeilingBound = 1 / (1 + r.Ceiling.PPS/r.Ports.PPS)
	}
	if r.Swanpath.OK() && r.Secgw.OK() {
		r.VsSecgw = r.Swanpath.PPS / r.Secgw.PPS
	}
	if r.Swanpath.OK() && r.Ceiling.OK() {
		r.VsCeiling = r.Swanpath.PPS / r.Ceiling.PPS
	}
}

// RoundRatios fills VsSecgwRounds and VsCeilingRounds from the windows of
// the systems, perRound of swanpath's and ipsec-secgw's and ceilPerRound of
// the ceiling's per round, in the order they were measured: for each round
// that both have in full, the median of swanpath's windows over the median
// of the other's. With two rounds or more, VsSecgw and VsCeiling become
// the median of theirs: each round's measurements ran back to back, so a
// slow spell of the machine falls on all of them, where the ratio of the
// overall medians can set one system's slow windows against the other's
// fast ones.
func (r *Row) RoundRatios(perRound, ceilPerRound int) {
	r.VsSecgwRounds = roundRatios(r.Swanpath, r.Secgw, perRound, perRound)
	if len(r.VsSecgwRounds) >= 2 {
		r.VsSecgw = sut.Median(r.VsSecgwRounds)
	}
	r.VsCeilingRounds = roundRatios(r.Swanpath, r.Ceiling, perRound, ceilPerRound)
	if len(r.VsCeilingRounds) >= 2 {
		r.VsCeiling = sut.Median(r.VsCeilingRounds)
	}
}

// roundRatios is, for each round both a and b have in full (na and nb
// windows each), the median of a's over the median of b's.
func roundRatios(a, b Measure, na, nb int) []float64 {
	if !a.OK() || !b.OK() || na < 1 || nb < 1 {
		return nil
	}
	var out []float64
	n := min(len(a.Windows)/na, len(b.Windows)/nb)
	for i := 0; i < n; i++ {
		x := sut.Median(a.Windows[i*na : (i+1)*na])
		y := sut.Median(b.Windows[i*nb : (i+1)*nb])
		if x > 0 && y > 0 {
			out = append(out, x/y)
		}
	}
	return out
}

// Install is the SA install experiment.
type Install struct {
	SAs       int     `json:"sas"`       // asked for
	Installed int     `json:"installed"` // SA + policy pairs that went in
	Error     string  `json:"error,omitempty"`
	Seconds   float64 `json:"seconds"`    // first request to the last reply
	LiveAfter float64 `json:"live_after"` // until every SA carried packets
	Live      int     `json:"live"`       // SAs that carried packets by then
	PerSecond float64 `json:"pairs_per_second"`
	// the tx rate (packets/s) in 100 ms samples: before, and the lowest
	// and median during the install
	RateBefore  float64   `json:"tx_pps_before"`
	RateMin     float64   `json:"tx_pps_min_during"`
	RateMedian  float64   `json:"tx_pps_median_during"`
	Samples     []float64 `json:"tx_pps_samples_during"`
	Stalls      int       `json:"samples_below_half_before"`
	HeapBefore  uint64    `json:"dpdk_heap_before"`
	HeapAfter   uint64    `json:"dpdk_heap_after"`
	RSSBefore   uint64    `json:"rss_before"`
	RSSAfter    uint64    `json:"rss_after"`
	HeapPerSA   float64   `json:"dpdk_heap_bytes_per_pair"`
	RSSPerSA    float64   `json:"rss_bytes_per_pair"`
	Suite       string    `json:"suite"`
	Description string    `json:"description"`
}

// Lab is the lab experiment: the real tunnel through namespaces and veths.
type Lab struct {
	Error   string `json:"error,omitempty"`
	ESP     string `json:"esp"`
	Seconds int    `json:"iperf3_seconds"`
	// iperf3 TCP, receiver's rate: plaintext h1 -> h2 with both routers
	// forwarding in the kernel over the same veths; through the tunnel
	// (swanpathd on af_packet, kernel-libipsec peer) both ways
	PlainBps     float64 `json:"plaintext_bps"`
	TunnelBps    float64 `json:"tunnel_bps"`
	TunnelRevBps float64 `json:"tunnel_reverse_bps"`
	// at a moderate rate (Pings pings h1 -> h2 every PingInterval): the
	// fast path's own latency (receive burst to transmit queue) of the
	// Frames it sent meanwhile, and ping's round trips
	PingInterval    string  `json:"ping_interval"`
	Pings           int     `json:"pings"`
	Frames          uint64  `json:"frames"`
	LatencyMedianNS int64   `json:"latency_median_ns"`
	LatencyP99NS    int64   `json:"latency_p99_ns"`
	RTTAvgUS        float64 `json:"ping_rtt_avg_us"`
	RTTMaxUS        float64 `json:"ping_rtt_max_us"`
}

// Settings are how the run measured.
type Settings struct {
	Quick     bool    `json:"quick"`
	Warmup    string  `json:"warmup"`
	Window    string  `json:"window"`
	Windows   int     `json:"windows"`
	Rounds    int     `json:"rounds"`
	Lcores    string  `json:"lcores"`
	ManySAs   int     `json:"many_sas"`
	IMIX      []int   `json:"imix_sizes"`
	TSCHz     float64 `json:"tsc_hz"`
	CryptoOps int     `json:"crypto_perf_ops"`
	// dpdk-test-crypto-perf runs per case and round
	CryptoRuns int `json:"crypto_perf_runs"`
}

// Results is everything one run produced.
type Results struct {
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Rows     []Row     `json:"rows"`
	Install  *Install  `json:"install,omitempty"`
	Lab      *Lab      `json:"lab,omitempty"`
	Notes    []string  `json:"notes"`
}

// WriteJSON writes r to path.
func (r *Results) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
