package dataplane

import "time"

// Latency is a histogram of the time frames spend in the fast path, from
// the receive burst they came in with to their handoff to the wire port's
// transmit queue (the fast path's own added latency; crypto included).
type Latency struct {
	// Buckets in increasing order; a bucket holds the frames whose
	// latency is at least Low and below the next bucket's Low.
	Buckets []LatencyBucket
}

// LatencyBucket is one bucket of a Latency histogram.
type LatencyBucket struct {
	Low   time.Duration
	Count uint64
}

// Frames is the number of frames counted.
func (l Latency) Frames() uint64 {
	var n uint64
	for _, b := range l.Buckets {
		n += b.Count
	}
	return n
}

// Quantile is the latency below which the fraction q (0..1) of the frames
// stayed: the upper end of the bucket that holds that frame (the lower
// end of the next bucket), or 0 when nothing was counted.
func (l Latency) Quantile(q float64) time.Duration {
	n := l.Frames()
	if n == 0 {
		return 0
	}
	want := uint64(q*float64(n) + 0.5)
	if want < 1 {
		want = 1
	}
	var seen uint64
	for i, b := range l.Buckets {
		seen += b.Count
		if seen >= want {
			if i+1 < len(l.Buckets) {
				return l.Buckets[i+1].Low
			}
			return b.Low
		}
	}
	return l.Buckets[len(l.Buckets)-1].Low
}

// Since is what was counted after prev, a earlier reading of the same
// histogram.
func (l Latency) Since(prev Latency) Latency {
	out := Latency{Buckets: make([]LatencyBucket, len(l.Buckets))}
	copy(out.Buckets, l.Buckets)
	if len(prev.Buckets) != len(l.Buckets) {
		return out
	}
	for i := range out.Buckets {
		if out.Buckets[i].Count >= prev.Buckets[i].Count {
			out.Buckets[i].Count -= prev.Buckets[i].Count
		}
	}
	return out
}
