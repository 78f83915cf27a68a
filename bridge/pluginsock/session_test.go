package pluginsock

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// A plugin's session reaches a SessionHandler: HELLO, REPLAY_DONE with its
// counts, and the end of the connection; a REPLAY_DONE before any HELLO
// reaches nothing (the fast path must not open on it).
func TestServerSession(t *testing.T) {
	s, h, _ := startServer(t, nil)
	ctx := testCtx(t)

	calls := func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Clone(h.mu.calls)
	}
	has := func(prefix string) func(*fakeHandler) bool {
		return func(f *fakeHandler) bool {
			return slices.ContainsFunc(f.mu.calls, func(c string) bool { return strings.HasPrefix(c, prefix) })
		}
	}

	// a client that says REPLAY_DONE without HELLO
	raw, err := DialReplay(ctx, s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.waitFor(ctx, has("connected 1 ")); err != nil {
		t.Fatalf("no Connected: %v (calls %q)", err, calls())
	}
	if err := raw.ReplayDone(ctx, ReplayDone{Replayed: 7, Failed: 2}); err != nil {
		t.Fatal(err)
	}
	if err := h.waitFor(ctx, has("replay-done 1 7/2")); err != nil {
		t.Fatalf("no ReplayDone: %v (calls %q)", err, calls())
	}
	raw.Close()
	if err := h.waitFor(ctx, has("disconnected 1")); err != nil {
		t.Fatalf("no Disconnected: %v (calls %q)", err, calls())
	}

	// a connection that never said HELLO: its REPLAY_DONE is answered
	// but reaches no handler, nor does its end
	c := dialNoHello(t, ctx, s.Path())
	if err := c.ReplayDone(ctx, ReplayDone{}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// a third connection, fully: its events come after the second's
	d, err := Dial(ctx, s.Path())
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := h.waitFor(ctx, has("disconnected 3")); err != nil {
		t.Fatalf("no Disconnected of the third: %v (calls %q)", err, calls())
	}
	for _, c := range calls() {
		if strings.HasSuffix(c, " 2") || strings.Contains(c, " 2 ") {
			t.Errorf("connection without HELLO reached the handler: %q", c)
		}
	}
	if !slices.Contains(calls(), "replay-done 3 0/0") {
		t.Errorf("Dial did not end an empty replay: %q", calls())
	}
}

func dialNoHello(t *testing.T, ctx context.Context, path string) *Client {
	t.Helper()
	c, err := dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
