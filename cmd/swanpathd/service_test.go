package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestProgressWatch(t *testing.T) {
	var p progressWatch
	steps := []struct {
		now   []uint64
		ok    bool
		stuck int
	}{
		{[]uint64{5, 9}, true, -1},     // first look: the reference
		{[]uint64{6, 10}, true, -1},    // both moved
		{[]uint64{7, 10}, false, 1},    // worker 1 stuck
		{[]uint64{8, 11}, true, -1},    // both moved since the last keep-alive
		{[]uint64{8, 11}, false, 0},    // nobody moved: the first stuck is named
		{[]uint64{9, 12, 1}, true, -1}, // a new worker set starts over
	}
	for i, s := range steps {
		ok, w := p.moved(s.now)
		if ok != s.ok || w != s.stuck {
			t.Errorf("step %d: moved(%v) = %v, %d; want %v, %d", i, s.now, ok, w, s.ok, s.stuck)
		}
	}
}

// With a watchdog asked for, keep-alives go out while the workers move and
// stop as soon as one stops; STATUS= says so.
func TestServiceWatchdog(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "200000") // 200 ms: a tick every 50 ms
	t.Setenv("WATCHDOG_PID", "")
	var mu sync.Mutex
	counts := []uint64{0, 0}
	stuck := false
	var sent []string
	s := &service{
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		progress: func() []uint64 {
			mu.Lock()
			defer mu.Unlock()
			counts[0]++
			if !stuck {
				counts[1]++
			}
			return append([]uint64(nil), counts...)
		},
		status: func() string { return statusLine(false, 2, 2) },
		notify: func(st string) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			sent = append(sent, st)
			return true, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	before := strings.Count(strings.Join(sent, "\n"), "WATCHDOG=1")
	stuck = true
	mu.Unlock()
	time.Sleep(100 * time.Millisecond) // the tick in flight may still pet
	mu.Lock()
	mid := strings.Count(strings.Join(sent, "\n"), "WATCHDOG=1")
	mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	all := strings.Join(sent, "\n")
	after := strings.Count(all, "WATCHDOG=1")
	if before < 3 {
		t.Errorf("%d keep-alives in 300 ms of progress, want several:\n%s", before, all)
	}
	if after != mid {
		t.Errorf("%d keep-alives sent after a worker stopped, want none:\n%s", after-mid, all)
	}
	for _, want := range []string{"STATUS=forwarding: 2 SAs, 2 policies", "STATUS=worker 1 makes no progress"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q in what was sent:\n%s", want, all)
		}
	}
}
