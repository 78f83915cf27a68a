package vici

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Without charon the watcher says so once, however often it retries, and
// reports no names.
func TestWatcherUnreachableSaysOnce(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	calls := 0
	w := &Watcher{
		Log:    slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil)),
		Socket: filepath.Join(t.TempDir(), "charon.vici"),
		Retry:  5 * time.Millisecond,
		Sink: func(connected bool, cs []Child) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if connected || len(cs) != 0 {
				t.Errorf("sink got connected=%v %d children without charon", connected, len(cs))
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := calls
		mu.Unlock()
		if n >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d attempts in 5 s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(buf.String(), "charon not reachable"); n != 1 {
		t.Errorf("said %d times that charon is not reachable:\n%s", n, buf.String())
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
