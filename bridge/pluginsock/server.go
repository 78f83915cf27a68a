package pluginsock

// Server: accept (root peers only) → per connection: read frame → decode →
// dispatch to Handler → write RESULT. Notify writes events to every
// connection. Garbage closes only the connection it came on.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/internal/peercred"
	"github.com/swanpath/swanpath/internal/rundir"
)

// writeTimeout bounds how long a stuck plugin can hold up Notify or a reply.
const writeTimeout = 5 * time.Second

// Server serves charon plugins on a unix socket.
type Server struct {
	log    *slog.Logger
	h      Handler
	ln     *net.UnixListener
	path   string
	allow  func(uid uint32) bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		conns  map[*serverConn]struct{}
		closed bool
		nextID uint64
		// afterFrame, if set (tests), sees each connection's read buffer
		// after every frame and when the connection ends.
		afterFrame func(buf []byte)
	}
}

type serverConn struct {
	id    uint64 // for SessionHandler
	hello bool   // said HELLO (SessionHandler knows it)
	c     *net.UnixConn
	uid   uint32
	fr    frameReader // owned by serve
	wmu   sync.Mutex  // one frame at a time: results and events interleave
}

// Listen creates the socket at path (rundir.Listen: parent directory 0700
// and owned by us, made so if missing, refused otherwise or if a symlink;
// socket 0600; a stale socket is removed, a live one refused) and serves
// it until ctx ends or Close.
func Listen(ctx context.Context, log *slog.Logger, path string, h Handler) (*Server, error) {
	return listen(ctx, log, path, h, func(uid uint32) bool { return uid == 0 })
}

func listen(ctx context.Context, log *slog.Logger, path string, h Handler, allow func(uint32) bool) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := rundir.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("plugin socket: %w", err)
	}
	s := &Server{log: log, h: h, ln: ln, path: path, allow: allow}
	s.mu.conns = map[*serverConn]struct{}{}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		<-s.ctx.Done()
		s.shutdown()
	}()
	go func() {
		defer s.wg.Done()
		s.acceptLoop()
	}()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting, closes every connection and waits for all
// goroutines. The socket file is removed.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.mu.closed = true
	conns := s.mu.conns
	s.mu.conns = map[*serverConn]struct{}{}
	s.mu.Unlock()
	s.ln.Close()
	for c := range conns {
		c.c.Close()
	}
}

func (s *Server) acceptLoop() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("plugin socket accept", "err", err)
			}
			return
		}
		cred, err := peercred.Of(c)
		uid := cred.Uid
		if err != nil || !s.allow(uid) {
			s.log.Warn("plugin socket: refusing peer", "uid", uid, "pid", cred.Pid, "err", err)
			c.Close()
			continue
		}
		sc := &serverConn{c: c, uid: uid}
		sc.fr.r = c
		s.mu.Lock()
		if s.mu.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.mu.nextID++
		sc.id = s.mu.nextID
		s.mu.conns[sc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(sc)
		}()
	}
}

func (s *Server) drop(sc *serverConn) {
	s.mu.Lock()
	delete(s.mu.conns, sc)
	s.mu.Unlock()
	sc.c.Close()
	if sh, ok := s.h.(SessionHandler); ok && sc.hello {
		sh.Disconnected(sc.id)
	}
}

func (s *Server) serve(sc *serverConn) {
	defer s.drop(sc)
	var out []byte
	for {
		m, err := sc.fr.read() // wipes what the frame left in its buffer
		if err != nil {
			s.afterFrame(sc)
			switch {
			case s.ctx.Err() != nil:
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
				s.log.Info("charon plugin disconnected")
			default:
				s.log.Warn("plugin socket: closing connection", "err", err)
			}
			return
		}
		res := s.dispatch(sc, m)
		// Whatever the outcome, nothing of an ADD_SA's keys stays here:
		// the handler copied what it keeps.
		m.SA.Wipe()
		out, err = AppendMessage(out[:0], &Message{Type: TypeResult, Seq: m.Seq, Result: res})
		if err != nil {
			s.log.Error("plugin socket: encode result", "err", err)
			return
		}
		if err := sc.write(out); err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("plugin socket: closing connection", "err", err)
			}
			return
		}
		s.afterFrame(sc)
	}
}

func (s *Server) afterFrame(sc *serverConn) {
	s.mu.Lock()
	f := s.mu.afterFrame
	s.mu.Unlock()
	if f != nil {
		f(sc.fr.buf[:cap(sc.fr.buf)])
	}
}

func (sc *serverConn) write(b []byte) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	sc.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := sc.c.Write(b)
	return err
}

// Notify sends ev to every connected plugin. A plugin that cannot take it
// is disconnected (it replays everything when it reconnects).
func (s *Server) Notify(ev Event) {
	m, err := EventMessage(ev)
	if err != nil {
		s.log.Error("plugin socket: notify", "err", err)
		return
	}
	b, err := AppendMessage(nil, m)
	if err != nil {
		s.log.Error("plugin socket: notify", "err", err)
		return
	}
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if err := c.write(b); err != nil {
			s.log.Warn("plugin socket: event not delivered, closing connection", "event", m.Type.String(), "err", err)
			c.c.Close()
		}
	}
}

// dispatch runs one request against the Handler.
func (s *Server) dispatch(sc *serverConn, m *Message) Result {
	// what the request installs is this connection's (engine: reconcile.go)
	ctx := engine.WithConn(s.ctx, sc.id)
	var res Result
	var err error
	sa := &m.SA
	switch m.Type {
	case TypeHello:
		s.log.Info("charon plugin connected", "name", m.Hello.Name, "pid", m.Hello.PID)
		if sh, ok := s.h.(SessionHandler); ok {
			sc.hello = true
			sh.Connected(sc.id, m.Hello)
		}
	case TypeReplayDone:
		s.log.Info("charon plugin replay done", "replayed", m.Replay.Replayed, "refused", m.Replay.Failed)
		if sh, ok := s.h.(SessionHandler); ok && sc.hello {
			sh.ReplayDone(sc.id, m.Replay)
		}
	case TypeGetSPI:
		if !sa.Src.IsValid() || !sa.Dst.IsValid() {
			err = fmt.Errorf("GET_SPI without SRC or DST: %w", model.ErrInvalid)
			break
		}
		res.SPI, err = s.h.GetSPI(ctx, sa.Src, sa.Dst, sa.Proto)
	case TypeAddSA, TypeUpdateSA, TypeQuerySA, TypeDelSA:
		if !sa.Dst.IsValid() || sa.SPI == 0 {
			sa.Wipe()
			err = fmt.Errorf("%s without DST or SPI: %w", m.Type, model.ErrInvalid)
			break
		}
		switch m.Type {
		case TypeAddSA:
			err = s.h.AddSA(ctx, sa) // the handler copies the keys; serve wipes sa
		case TypeUpdateSA:
			u := m.Update
			err = s.h.UpdateSA(ctx, sa.SAID, sa.Src, u.NewSrc, u.NewDst, u.NewSrcPort, u.NewDstPort, u.Encap)
		case TypeQuerySA:
			res.Stats, err = s.h.QuerySA(ctx, sa.SAID)
		case TypeDelSA:
			err = s.h.DelSA(ctx, sa.SAID)
		}
	case TypeFlushSAs:
		err = s.h.FlushSAs(ctx)
	case TypeAddPolicy, TypeQueryPolicy, TypeDelPolicy:
		p := &m.Policy
		if !p.Sel.Src.IsValid() || !p.Sel.Dst.IsValid() {
			err = fmt.Errorf("%s without SEL_SRC or SEL_DST: %w", m.Type, model.ErrInvalid)
			break
		}
		switch m.Type {
		case TypeAddPolicy:
			err = s.h.AddPolicy(ctx, p)
		case TypeQueryPolicy:
			res.Stats, err = s.h.QueryPolicy(ctx, p.PolicyID)
		case TypeDelPolicy:
			err = s.h.DelPolicy(ctx, p.PolicyID)
		}
	case TypeFlushPolicies:
		err = s.h.FlushPolicies(ctx)
	default:
		err = fmt.Errorf("message type %s is not a request: %w", m.Type, model.ErrUnsupported)
	}
	if err != nil {
		res = Result{Status: statusOf(err), Message: err.Error()}
		lvl := slog.LevelWarn
		if m.Type == TypeDelSA && res.Status == StatusNotFound {
			// charon deletes what swanpathd deleted at its hard
			// lifetime: no error, as for the kernel (ESRCH)
			lvl = slog.LevelDebug
		}
		s.log.Log(ctx, lvl, "plugin request failed", "op", m.Type.String(), "status", res.Status.String(), "err", err)
	}
	return res
}

func statusOf(err error) Status {
	switch {
	case errors.Is(err, model.ErrNotFound):
		return StatusNotFound
	case errors.Is(err, model.ErrExists):
		return StatusExists
	case errors.Is(err, model.ErrUnsupported):
		return StatusUnsupported
	case errors.Is(err, model.ErrInvalid):
		return StatusInvalid
	}
	return StatusFailed
}
