package pluginsock

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/internal/syncbuf"
)

func startServer(t *testing.T, allow func(uint32) bool) (*Server, *fakeHandler, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newFakeHandler()
	path := filepath.Join(t.TempDir(), "sub", "charon.sock")
	if allow == nil {
		allow = func(uint32) bool { return true } // tests may run unprivileged
	}
	s, err := listen(context.Background(), log, path, h, allow)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, h, logs
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestServerRequests(t *testing.T) {
	s, h, logs := startServer(t, nil)
	ctx := testCtx(t)
	if fi, err := os.Stat(s.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(filepath.Dir(s.Path())); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	c, err := Dial(ctx, s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	sa := testSA()
	// refused with what charon logs: the fast path matches no marks
	// (testSA has them so that the codec round-trips them)
	if err := c.AddSA(ctx, &sa); !errors.Is(err, model.ErrUnsupported) || !strings.Contains(err.Error(), "mark 0x2a/0xff") ||
		!strings.Contains(err.Error(), "XFRM interface id 7") {
		t.Errorf("AddSA with mark and if_id = %v, want UNSUPPORTED naming both", err)
	}
	sa = testSA()
	sa.Mark, sa.MarkMask, sa.IfID = 0, 0, 0
	spi, err := c.GetSPI(ctx, sa.Src, sa.Dst, model.ProtoESP)
	if err != nil || spi == 0 {
		t.Fatalf("GetSPI = %#x, %v", spi, err)
	}
	sa.SPI = spi
	if err := c.AddSA(ctx, &sa); err != nil {
		t.Fatal(err)
	}
	if err := c.AddSA(ctx, &sa); !errors.Is(err, model.ErrExists) {
		t.Errorf("second AddSA = %v, want ErrExists", err)
	}
	h.mu.Lock()
	got := h.mu.sas[sa.SAID]
	h.mu.Unlock()
	if !bytes.Equal(got.EncKey, sa.EncKey) || got.SrcPort != 4500 || got.DstPort != 31337 || !got.Encap || got.Reqid != 3 {
		t.Errorf("handler got %+v", got)
	}
	st, err := c.QuerySA(ctx, sa.SAID)
	if err != nil || st.Bytes != h.stats.Bytes || st.Packets != h.stats.Packets || !st.LastUse.Equal(h.stats.LastUse) {
		t.Errorf("QuerySA = %+v, %v; want %+v", st, err, h.stats)
	}
	_, err = c.Do(ctx, &Message{Type: TypeUpdateSA, SA: model.SA{SAID: sa.SAID, Src: sa.Src},
		Update: SAUpdate{NewSrc: sa.Src, NewDst: sa.Dst, NewSrcPort: 4500, NewDstPort: 4600, Encap: true}})
	if err != nil {
		t.Errorf("UpdateSA: %v", err)
	}
	p := testPolicy()
	for i := 0; i < 2; i++ {
		if err := c.AddPolicy(ctx, &p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Do(ctx, &Message{Type: TypeQueryPolicy, Policy: p}); err != nil {
		t.Errorf("QueryPolicy: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := c.DelPolicy(ctx, p.PolicyID); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DelPolicy(ctx, p.PolicyID); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("third DelPolicy = %v, want ErrNotFound", err)
	}
	if err := c.DelSA(ctx, sa.SAID); err != nil {
		t.Error(err)
	}
	if _, err := c.QuerySA(ctx, sa.SAID); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("QuerySA after delete = %v, want ErrNotFound", err)
	}
	// Missing attributes are refused with INVALID, the connection stays.
	if _, err := c.Do(ctx, &Message{Type: TypeAddSA}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("empty ADD_SA = %v, want ErrInvalid", err)
	}
	// A non-request type gets UNSUPPORTED.
	if _, err := c.Do(ctx, &Message{Type: TypeResult}); !errors.Is(err, model.ErrUnsupported) {
		t.Errorf("RESULT as request = %v, want ErrUnsupported", err)
	}
	for _, op := range []Type{TypeFlushSAs, TypeFlushPolicies} {
		if _, err := c.Do(ctx, &Message{Type: op}); err != nil {
			t.Errorf("%s: %v", op, err)
		}
	}
	if strings.Contains(logs.String(), "aaaa") || strings.Contains(logs.String(), "AAAA") {
		t.Errorf("key bytes in the log:\n%s", logs)
	}
}

func TestServerGarbageClosesOnlyThatConnection(t *testing.T) {
	s, _, logs := startServer(t, nil)
	ctx := testCtx(t)
	good, err := Dial(ctx, s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.0\r\n\r\n"),
		frame(1, 3, tlv(attrSPI, 1)),
		frame(1, 3, []byte{0, 1, 0, 200}),
	} {
		bad, err := net.Dial("unix", s.Path())
		if err != nil {
			t.Fatal(err)
		}
		bad.Write(garbage)
		bad.SetReadDeadline(time.Now().Add(5 * time.Second))
		// reset rather than EOF when the server closed on bytes it had not
		// read (it reads the header and the payload separately)
		if n, err := bad.Read(make([]byte, 64)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("garbage %q: read = %d, %v; want EOF or reset (closed)", garbage, n, err)
		}
		bad.Close()
		if _, err := good.Do(ctx, &Message{Type: TypeFlushSAs}); err != nil {
			t.Fatalf("good connection broken by garbage on another: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "closing connection"); n != 3 {
		t.Errorf("%d 'closing connection' log lines, want 3:\n%s", n, logs)
	}
}

func TestServerRefusesPeer(t *testing.T) {
	s, _, logs := startServer(t, func(uint32) bool { return false })
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("refused peer: read = %v, want EOF", err)
	}
	if !strings.Contains(logs.String(), "refusing peer") {
		t.Errorf("no log line for the refused peer:\n%s", logs)
	}
}

func TestServerNotify(t *testing.T) {
	s, _, _ := startServer(t, nil)
	ctx := testCtx(t)
	var clients []*Client
	for i := 0; i < 3; i++ {
		c, err := Dial(ctx, s.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	ev := Event{Kind: EventExpire, SA: testSA().SAID, Hard: true}
	s.Notify(ev)
	for i, c := range clients {
		select {
		case got := <-c.Events():
			if got != ev {
				t.Errorf("client %d: event %+v, want %+v", i, got, ev)
			}
		case <-ctx.Done():
			t.Fatalf("client %d: no event", i)
		}
	}
}

func TestServerStaleSocketAndClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run") // t.TempDir() itself is 0755
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "charon.sock")
	// A stale socket file (nobody listening) is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s, err := listen(context.Background(), nil, path, newFakeHandler(), func(uint32) bool { return true })
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	// A live one is not.
	if _, err := listen(context.Background(), nil, path, newFakeHandler(), nil); err == nil {
		t.Error("second server on a live socket")
	}
	ctx := testCtx(t)
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.Close()
	select {
	case _, ok := <-c.Events():
		if ok {
			t.Error("unexpected event")
		}
	case <-ctx.Done():
		t.Fatal("client not disconnected by Close")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after Close: %v", err)
	}
}

func TestServerContextStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := listen(ctx, nil, filepath.Join(t.TempDir(), "run", "s"), newFakeHandler(), func(uint32) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs after the context ended")
	}
}

// TestListenRefusesUnsafeDirectory: the socket's directory must be ours
// with mode 0700 and not a symlink (internal/rundir has every case).
func TestListenRefusesUnsafeDirectory(t *testing.T) {
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Join(t.TempDir(), "run"), link); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ dir, want string }{
		{open, "mode 0755 (want 0700)"},
		{link, "is a symlink"},
	} {
		path := filepath.Join(tt.dir, "charon.sock")
		_, err := listen(context.Background(), nil, path, newFakeHandler(), func(uint32) bool { return true })
		if err == nil || !strings.Contains(err.Error(), tt.dir+": unsafe path: "+tt.want) {
			t.Errorf("listen(%s) = %v, want %q", path, err, tt.want)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after the refusal: %v", path, err)
		}
	}
}
