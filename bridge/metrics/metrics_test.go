package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/swanpath/swanpath/bridge/metrics/metricstest"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/model"
)

// fakeDP is a data plane with fixed counters.
type fakeDP struct {
	sas map[model.SAID]dataplane.SACounters
}

func (f *fakeDP) AddSA(sa *model.SA) error {
	f.sas[sa.SAID] = dataplane.SACounters{Packets: uint64(sa.SPI), Bytes: 100 * uint64(sa.SPI), DropReplay: 3,
		Crypto: "crypto_aesni_gcm0", CryptoMode: "cpu"}
	return nil
}
func (f *fakeDP) DelSA(id model.SAID) error { delete(f.sas, id); return nil }
func (f *fakeDP) MoveSA(model.SAID, netip.Addr, netip.Addr, uint16, uint16, bool) error {
	return nil
}
func (f *fakeDP) ExpireSA(model.SAID) error                   { return nil }
func (f *fakeDP) BlockSA(model.SAID) error                    { return nil }
func (f *fakeDP) SetPolicy(dataplane.Binding) error           { return nil }
func (f *fakeDP) DelPolicy(model.PolicyID) error              { return nil }
func (f *fakeDP) Bind(model.PolicyID, model.SAID, bool) error { return nil }
func (f *fakeDP) SetFIB(dataplane.FIB) error                  { return nil }
func (f *fakeDP) SetClosed(bool)                              {}
func (f *fakeDP) Notes() []dataplane.Note                     { return nil }
func (f *fakeDP) SAStats(id model.SAID) (dataplane.SACounters, bool) {
	c, ok := f.sas[id]
	return c, ok
}
func (f *fakeDP) Ports() []dataplane.PortInfo {
	return []dataplane.PortInfo{{Index: 0, Name: "lan"}, {Index: 1, Name: "wan"}}
}
func (f *fakeDP) PortStats() []dataplane.PortStats {
	var out []dataplane.PortStats
	for p, name := range []string{"lan", "wan"} {
		c := map[string]uint64{}
		for i, n := range dataplane.CounterNames {
			c[n] = uint64(1000*p + i)
		}
		out = append(out, dataplane.PortStats{Name: name, Counters: c})
	}
	return out
}

var (
	gw   = netip.MustParseAddr("192.0.2.1")
	peer = netip.MustParseAddr("192.0.2.2")
)

func sa(spi uint32, inbound bool) *model.SA {
	s := &model.SA{SAID: model.SAID{Dst: peer, SPI: spi, Proto: model.ProtoESP}, Src: gw, Reqid: 1,
		Mode: model.ModeTunnel, EncAlg: model.EncrAESGCM16, Inbound: inbound,
		EncKey: model.Key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}}
	if inbound {
		s.Src, s.Dst = peer, gw
	}
	return s
}

// scrape serves c over HTTP and parses what a GET /metrics returns.
func scrape(t *testing.T, c *Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg, err := Registry(c)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(slog.New(slog.NewTextHandler(io.Discard, nil)), reg))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain") // the text format, as Prometheus may ask
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); expfmt.ResponseFormat(res.Header).FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("content type %q, want the text format", ct)
	}
	fams, err := metricstest.Parse(res.Body)
	if err != nil {
		t.Fatalf("not Prometheus text: %v", err)
	}
	return fams
}

// value is the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	if _, ok := fams[name]; !ok {
		t.Fatalf("no family %s", name)
	}
	v, ok := metricstest.Sample(fams, name, want)
	if !ok {
		t.Fatalf("%s has no sample with %v", name, want)
	}
	return v
}

// TestScrape: a scrape parses as Prometheus text and carries every per
// port counter, the SAs' counters under charon's names, their number and
// the policies', and the latency histogram with cumulative buckets.
func TestScrape(t *testing.T) {
	ctx := context.Background()
	dp := &fakeDP{sas: map[model.SAID]dataplane.SACounters{}}
	eng := engine.New(slog.New(slog.NewTextHandler(io.Discard, nil)), dp)
	for _, s := range []*model.SA{sa(0x100, true), sa(0x200, false)} {
		if err := eng.AddSA(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	pol := &model.Policy{PolicyID: model.PolicyID{Sel: model.Selector{
		Src: netip.MustParsePrefix("10.1.0.0/24"), Dst: netip.MustParsePrefix("10.2.0.0/24")}, Dir: model.DirOut},
		Reqid: 1, Mode: model.ModeTunnel, TmplSrc: gw, TmplDst: peer}
	if err := eng.AddPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	eng.SetChildren(true, []engine.Child{{Names: engine.Names{Conn: "s2s", Child: "net", ChildID: 7, IKEID: 3},
		Reqid: 1, SPIIn: 0x100, SPIOut: 0x200}})
	lat := dataplane.Latency{Buckets: []dataplane.LatencyBucket{
		{Low: 0, Count: 5}, {Low: time.Microsecond, Count: 10}, {Low: 10 * time.Microsecond, Count: 2}}}
	fams := scrape(t, &Collector{Eng: eng, DP: dp, Latency: func() dataplane.Latency { return lat }})

	for p, port := range []string{"lan", "wan"} {
		for i, n := range dataplane.CounterNames {
			if v := value(t, fams, "swanpath_port_"+n+"_total", map[string]string{"port": port}); v != float64(1000*p+i) {
				t.Errorf("%s %s = %v, want %d", port, n, v, 1000*p+i)
			}
		}
	}
	in := map[string]string{"spi": "0x00000100", "dir": "in", "conn": "s2s", "child": "net"}
	if v := value(t, fams, "swanpath_sa_packets_total", in); v != 0x100 {
		t.Errorf("inbound SA packets %v", v)
	}
	if v := value(t, fams, "swanpath_sa_bytes_total", map[string]string{"spi": "0x00000200", "dir": "out", "child": "net"}); v != 100*0x200 {
		t.Errorf("outbound SA bytes %v", v)
	}
	if v := value(t, fams, "swanpath_sa_drops_total", map[string]string{"spi": "0x00000100", "reason": "replay"}); v != 3 {
		t.Errorf("replay drops %v", v)
	}
	if v := value(t, fams, "swanpath_sa_info", map[string]string{"spi": "0x00000100", "crypto_dev": "crypto_aesni_gcm0",
		"crypto_mode": "cpu", "child_id": "7", "ike_id": "3"}); v != 1 {
		t.Errorf("sa_info %v", v)
	}
	if v := value(t, fams, "swanpath_sas", map[string]string{"dir": "in"}); v != 1 {
		t.Errorf("inbound SAs %v", v)
	}
	if v := value(t, fams, "swanpath_policies", map[string]string{"dir": "out"}); v != 1 {
		t.Errorf("outbound policies %v", v)
	}
	if v := value(t, fams, "swanpath_fastpath_closed", nil); v != 1 {
		t.Errorf("fastpath_closed %v (no charon has replayed)", v)
	}
	h := fams["swanpath_latency_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 17 {
		t.Errorf("latency count %d, want 17", h.GetSampleCount())
	}
	want := map[float64]uint64{1e-6: 5, 1e-5: 15}
	for _, b := range h.GetBucket() {
		if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("bucket le=%g: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
		delete(want, b.GetUpperBound())
	}
	if len(want) != 0 {
		t.Errorf("buckets missing: %v", want)
	}
}
