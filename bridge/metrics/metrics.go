// Package metrics is swanpathd's Prometheus endpoint: collectors that read
// the engine and the fast path's counters when scraped (nothing is counted
// per packet here), and the HTTP server that serves them in the text
// format. It is off unless metrics.listen is set.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/engine"
)

// Namespace prefixes every metric name.
const Namespace = "swanpath"

// Collector reads the engine and the fast path at scrape time.
type Collector struct {
	Eng *engine.Engine
	DP  dataplane.Dataplane
	// Latency is the fast path's histogram (nil: none exported)
	Latency func() dataplane.Latency
}

var (
	saLabels  = []string{"spi", "dir", "dst", "reqid", "conn", "child"}
	saPackets = prometheus.NewDesc(Namespace+"_sa_packets_total",
		"Packets processed by the SA in the fast path (decrypted inbound, encrypted outbound).", saLabels, nil)
	saBytes = prometheus.NewDesc(Namespace+"_sa_bytes_total",
		"Bytes of the packets the SA processed (inner packets, as the kernel counts them).", saLabels, nil)
	saDrops = prometheus.NewDesc(Namespace+"_sa_drops_total",
		"Packets the SA dropped, by reason (auth: ICV failed, replay: outside or seen in the replay window, malformed, policy: inner packet outside the SA's policy).",
		append(slices.Clone(saLabels), "reason"), nil)
	saInfo = prometheus.NewDesc(Namespace+"_sa_info",
		"One per SA: its crypto device and mode, CHILD_SA and IKE_SA unique ids (1).",
		append(slices.Clone(saLabels), "crypto_dev", "crypto_mode", "child_id", "ike_id"), nil)
	sasDesc = prometheus.NewDesc(Namespace+"_sas",
		"SAs installed in the fast path, by direction.", []string{"dir"}, nil)
	policiesDesc = prometheus.NewDesc(Namespace+"_policies",
		"Policies installed in the fast path, by direction.", []string{"dir"}, nil)
	closedDesc = prometheus.NewDesc(Namespace+"_fastpath_closed",
		"1 while the fast path fails closed (no charon has replayed, or none is left and no policy).", nil, nil)
	viciDesc = prometheus.NewDesc(Namespace+"_vici_connected",
		"1 while swanpathd follows charon over VICI (SAs carry charon's names).", nil, nil)
	latencyDesc = prometheus.NewDesc(Namespace+"_latency_seconds",
		"Time frames spend in the fast path, from their receive burst to the wire port's transmit queue (crypto included). The sum is estimated from the buckets' lower bounds.",
		nil, nil)
)

// portDesc is the counter of one per port counter (dataplane.CounterNames).
func portDesc(name string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_port_"+name+"_total",
		"Per port counter "+name+" of the fast path (swanpathctl stats).", []string{"port"}, nil)
}

var portDescs = func() map[string]*prometheus.Desc {
	m := make(map[string]*prometheus.Desc, len(dataplane.CounterNames))
	for _, n := range dataplane.CounterNames {
		m[n] = portDesc(n)
	}
	return m
}()

// Describe sends the fixed descriptions; per port counters the fast path
// adds later are still collected (the collector is then unchecked for them).
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{saPackets, saBytes, saDrops, saInfo, sasDesc, policiesDesc, closedDesc, viciDesc, latencyDesc} {
		ch <- d
	}
	for _, n := range dataplane.CounterNames {
		ch <- portDescs[n]
	}
}

// Collect reads everything once.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectPorts(ch)
	c.collectSAs(ch)
	pols := map[string]int{"in": 0, "out": 0, "fwd": 0}
	for _, p := range c.Eng.ListPolicies() {
		pols[p.Dir.String()]++
	}
	for dir, n := range pols {
		ch <- prometheus.MustNewConstMetric(policiesDesc, prometheus.GaugeValue, float64(n), dir)
	}
	ch <- prometheus.MustNewConstMetric(closedDesc, prometheus.GaugeValue, b2f(c.Eng.Closed()))
	_, known := c.Eng.Children()
	ch <- prometheus.MustNewConstMetric(viciDesc, prometheus.GaugeValue, b2f(known))
	if c.Latency != nil {
		ch <- latencyMetric(c.Latency())
	}
}

func (c *Collector) collectPorts(ch chan<- prometheus.Metric) {
	stats := c.DP.PortStats()
	for i, p := range c.DP.Ports() {
		if i >= len(stats) {
			break
		}
		for _, n := range dataplane.CounterNames {
			ch <- prometheus.MustNewConstMetric(portDescs[n], prometheus.CounterValue, float64(stats[i].Counters[n]), p.Name)
		}
	}
	// the route-based interfaces' counters follow the ports', by name
	for i := len(c.DP.Ports()); i < len(stats); i++ {
		for _, n := range dataplane.CounterNames {
			ch <- prometheus.MustNewConstMetric(portDescs[n], prometheus.CounterValue, float64(stats[i].Counters[n]), stats[i].Name)
		}
	}
}

func (c *Collector) collectSAs(ch chan<- prometheus.Metric) {
	dirs := map[string]int{"in": 0, "out": 0}
	for _, s := range c.Eng.ListSAs() {
		dir := s.Direction()
		dirs[dir]++
		n, _ := c.Eng.NamesOfSA(&s.SA)
		lv := []string{fmt.Sprintf("0x%08x", s.SPI), dir, s.Dst.String(), strconv.FormatUint(uint64(s.Reqid), 10), n.Conn, n.Child}
		ch <- prometheus.MustNewConstMetric(saPackets, prometheus.CounterValue, float64(s.Packets), lv...)
		ch <- prometheus.MustNewConstMetric(saBytes, prometheus.CounterValue, float64(s.Bytes), lv...)
		for _, d := range []struct {
			reason string
			n      uint64
		}{{"auth", s.DropAuth}, {"replay", s.DropReplay}, {"malformed", s.DropMalformed}, {"policy", s.DropPolicy}} {
			ch <- prometheus.MustNewConstMetric(saDrops, prometheus.CounterValue, float64(d.n), append(lv, d.reason)...)
		}
		ch <- prometheus.MustNewConstMetric(saInfo, prometheus.GaugeValue, 1,
			append(lv, s.Crypto, s.CryptoMode, id(n.ChildID), id(n.IKEID))...)
	}
	for dir, n := range dirs {
		ch <- prometheus.MustNewConstMetric(sasDesc, prometheus.GaugeValue, float64(n), dir)
	}
}

func id(v uint32) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(v), 10)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// latencyMetric is the fast path's histogram in Prometheus' form: bucket
// i's upper bound is bucket i+1's lower one (cumulative counts); the last
// bucket has none but +Inf.
func latencyMetric(l dataplane.Latency) prometheus.Metric {
	buckets := make(map[float64]uint64, len(l.Buckets))
	var cum uint64
	var sum float64
	for i, b := range l.Buckets {
		cum += b.Count
		sum += b.Low.Seconds() * float64(b.Count)
		if i+1 < len(l.Buckets) {
			buckets[l.Buckets[i+1].Low.Seconds()] = cum
		}
	}
	return prometheus.MustNewConstHistogram(latencyDesc, cum, sum, buckets)
}

// Registry is a registry with c, and the Go runtime's and the process's
// collectors.
func Registry(c *Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, x := range []prometheus.Collector{c, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(x); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return reg, nil
}

// Handler serves reg's metrics (GET /metrics) in the text format.
func Handler(log *slog.Logger, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), MaxRequestsInFlight: 4,
		Timeout: 10 * time.Second,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "swanpathd: metrics at /metrics")
	})
	return mux
}

// Serve listens on addr and serves c until ctx is done. It fails at once
// when addr cannot be bound.
func Serve(ctx context.Context, log *slog.Logger, addr string, c *Collector) error {
	reg, err := Registry(c)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics.listen: %w", err)
	}
	srv := &http.Server{Handler: Handler(log, reg), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	log.Info("metrics endpoint listening", "url", "http://"+ln.Addr().String()+"/metrics")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return ctx.Err()
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return ctx.Err()
		}
		return fmt.Errorf("metrics: %w", err)
	}
}
