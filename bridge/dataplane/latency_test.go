package dataplane

import (
	"testing"
	"time"
)

func TestLatencyQuantile(t *testing.T) {
	l := Latency{Buckets: []LatencyBucket{
		{Low: 0, Count: 0},
		{Low: time.Microsecond, Count: 90},
		{Low: 2 * time.Microsecond, Count: 9},
		{Low: 4 * time.Microsecond, Count: 1},
		{Low: 8 * time.Microsecond, Count: 0},
	}}
	if n := l.Frames(); n != 100 {
		t.Fatalf("frames %d, want 100", n)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 2 * time.Microsecond},  // in the 1-2 µs bucket
		{0.9, 2 * time.Microsecond},  // the 90th frame is the last of it
		{0.99, 4 * time.Microsecond}, // the 99th is in 2-4 µs
		{1, 8 * time.Microsecond},
	} {
		if got := l.Quantile(c.q); got != c.want {
			t.Errorf("quantile %v = %v, want %v", c.q, got, c.want)
		}
	}
	if got := (Latency{}).Quantile(0.5); got != 0 {
		t.Errorf("empty histogram: %v", got)
	}
	prev := Latency{Buckets: []LatencyBucket{{0, 0}, {time.Microsecond, 90}, {2 * time.Microsecond, 0}, {4 * time.Microsecond, 0}, {8 * time.Microsecond, 0}}}
	d := l.Since(prev)
	if d.Frames() != 10 || d.Quantile(0.5) != 4*time.Microsecond {
		t.Errorf("since: %d frames, median %v", d.Frames(), d.Quantile(0.5))
	}
}
