package sut

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Counter reads a packet counter that only grows (a port's tx).
type Counter func() (uint64, error)

type sample struct {
	n uint64
	t time.Time
}

// read samples c, timed at the middle of the call (a control socket
// round trip takes a moment).
func (c Counter) read() (sample, error) {
	t0 := time.Now()
	n, err := c()
	t1 := time.Now()
	return sample{n: n, t: t0.Add(t1.Sub(t0) / 2)}, err
}

// WaitFlowing returns once c has grown over an interval of 100 ms, or an
// error after timeout.
func WaitFlowing(ctx context.Context, c Counter, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	prev, err := c.read()
	if err != nil {
		return err
	}
	for {
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
		cur, err := c.read()
		if err != nil {
			return err
		}
		if cur.n > prev.n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no packets out within %s", timeout)
		}
		prev = cur
	}
}

// Windows waits warmup, then measures the rate of c over n consecutive
// windows of length w (packets per second each).
func Windows(ctx context.Context, c Counter, warmup, w time.Duration, n int) ([]float64, error) {
	if err := sleep(ctx, warmup); err != nil {
		return nil, err
	}
	prev, err := c.read()
	if err != nil {
		return nil, err
	}
	rates := make([]float64, 0, n)
	for range n {
		if err := sleep(ctx, w); err != nil {
			return nil, err
		}
		cur, err := c.read()
		if err != nil {
			return nil, err
		}
		rates = append(rates, float64(cur.n-prev.n)/cur.t.Sub(prev.t).Seconds())
		prev = cur
	}
	return rates, nil
}

// Median of xs (the mean of the two middle values for an even count); 0
// for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
