// Package tsc measures the time stamp counter's rate, which DPDK counts
// cycles in (rte_get_tsc_hz): cycles per packet = TSC Hz / packets per
// second of the one busy worker core.
package tsc

import "time"

// Hz measures the TSC rate against the wall clock over d.
func Hz(d time.Duration) float64 {
	t0, c0 := time.Now(), rdtsc()
	time.Sleep(d)
	t1, c1 := time.Now(), rdtsc()
	if c1 == c0 {
		return 0
	}
	return float64(c1-c0) / t1.Sub(t0).Seconds()
}
