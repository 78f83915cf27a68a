package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/swanpath/swanpath/bridge/metrics/metricstest"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/lab"
)

// scrapeMetrics GETs swanpathd's /metrics inside the gateway's namespace
// and parses it as Prometheus text.
func scrapeMetrics(ctx context.Context, g *gateway, addr string) (map[string]*dto.MetricFamily, error) {
	host := g.l.Host(lab.GW)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return host.Dial("tcp", addr) },
	}}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	res, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", res.Status)
	}
	fams, err := metricstest.Parse(res.Body)
	if err != nil {
		return nil, fmt.Errorf("/metrics is not Prometheus text: %w", err)
	}
	return fams, nil
}

// TestMetricsDuringTraffic: swanpathd with metrics.listen set, scraped
// while a UDP stream crosses the tunnel: the endpoint parses as Prometheus
// text, and each per port counter of `swanpathctl stats --json` and each
// SA's packets of `swanpathctl sa --json` lies between a scrape before and
// a scrape after it (the counters run meanwhile). The SAs and policies are
// counted, the latency histogram counts frames.
func TestMetricsDuringTraffic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const addr = "127.0.0.1:9469"
	g := start(t, ctx, lab.Options{MetricsListen: addr}, lab.Tunnel{ESPProposals: "aes128gcm16", Encap: true})
	warmUp(t, ctx, g)
	stream, err := g.l.StartUDPSeq(ctx, lab.SeqOptions{From: lab.H1, To: lab.H2, ToAddr: lab.H2Addr, Port: 7792,
		Rate: 1000, Duration: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFlowing(t, ctx, g, 1000)

	before, err := scrapeMetrics(ctx, g, addr)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := g.d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sas, err := g.d.SAs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, err := scrapeMetrics(ctx, g, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	between := func(what, name string, labels map[string]string, v uint64) {
		t.Helper()
		lo, ok1 := metricstest.Sample(before, name, labels)
		hi, ok2 := metricstest.Sample(after, name, labels)
		if !ok1 || !ok2 {
			t.Errorf("%s: no %s%v in the scrapes", what, name, labels)
			return
		}
		if float64(v) < lo || float64(v) > hi {
			t.Errorf("%s: swanpathctl says %d, the scrapes before and after %v and %v", what, v, lo, hi)
		}
	}
	for _, port := range []string{"lan", "wan"} {
		for _, n := range dataplane.CounterNames {
			between(port+" "+n, "swanpath_port_"+n+"_total", map[string]string{"port": port}, stats[port][n])
		}
	}
	// esp_out is counted on the port the plaintext came in on
	if stats["lan"]["rx"] < 1000 || stats["lan"]["esp_out"] < 1000 {
		t.Errorf("the stream did not cross the fast path: %v", stats)
	}
	if len(sas) != 2 {
		t.Fatalf("%d SAs, want 2", len(sas))
	}
	for _, s := range sas {
		l := map[string]string{"spi": strings.ToLower(s.SPI), "dir": s.Dir}
		between("SA "+s.Dir+" "+s.SPI+" packets", "swanpath_sa_packets_total", l, s.Packets)
		between("SA "+s.Dir+" "+s.SPI+" bytes", "swanpath_sa_bytes_total", l, s.Bytes)
		if dev, ok := metricstest.Sample(after, "swanpath_sa_info", map[string]string{"spi": strings.ToLower(s.SPI), "crypto_dev": s.Crypto}); !ok || dev != 1 {
			t.Errorf("no swanpath_sa_info with crypto_dev %q for %s", s.Crypto, s.SPI)
		}
	}
	for _, dir := range []string{"in", "out"} {
		if v, _ := metricstest.Sample(after, "swanpath_sas", map[string]string{"dir": dir}); v != 1 {
			t.Errorf("swanpath_sas{dir=%q} = %v, want 1", dir, v)
		}
	}
	if v, _ := metricstest.Sample(after, "swanpath_policies", map[string]string{"dir": "out"}); v < 1 {
		t.Errorf("swanpath_policies{dir=\"out\"} = %v", v)
	}
	h := after["swanpath_latency_seconds"].GetMetric()
	if len(h) != 1 || h[0].GetHistogram().GetSampleCount() < 1000 {
		t.Errorf("latency histogram: %v", h)
	}
	if v, _ := metricstest.Sample(after, "swanpath_fastpath_closed", nil); v != 0 {
		t.Errorf("swanpath_fastpath_closed = %v with charon connected", v)
	}
}
