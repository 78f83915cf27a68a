// Package ctl is swanpathd's local management socket, spoken by
// swanpathctl: one JSON request per connection ({"cmd":"sa"}), one JSON
// reply. The views never carry key material.
package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/swanpath/swanpath/bridge/dataplane"
	"github.com/swanpath/swanpath/internal/peercred"
	"github.com/swanpath/swanpath/internal/rundir"
)

// SA is an SA as swanpathctl shows it.
type SA struct {
	SPI          string `json:"spi"`
	Dir          string `json:"dir"`
	Src          string `json:"src"`
	Dst          string `json:"dst"`
	Proto        string `json:"proto"`
	Mode         string `json:"mode"`
	Reqid        uint32 `json:"reqid"`
	Encap        bool   `json:"encap"`
	SrcPort      uint16 `json:"sport,omitempty"`
	DstPort      uint16 `json:"dport,omitempty"`
	Aead         string `json:"aead,omitempty"`
	Enc          string `json:"enc,omitempty"`
	Auth         string `json:"auth,omitempty"`
	KeyBits      int    `json:"key_bits,omitempty"`
	ICVBits      int    `json:"icv_bits,omitempty"`
	ReplayWindow uint32 `json:"replay_window"`
	ESN          bool   `json:"esn"`
	Crypto       string `json:"crypto_dev"`
	CryptoMode   string `json:"crypto_mode"`
	Bytes        uint64 `json:"bytes"`
	Packets      uint64 `json:"packets"`
	LastUse      string `json:"last_use,omitempty"`
	DropAuth     uint64 `json:"drop_auth"`
	DropReplay   uint64 `json:"drop_replay"`
	DropMalform  uint64 `json:"drop_malformed"`
	DropPolicy   uint64 `json:"drop_policy"`
	PathMTU      uint16 `json:"path_mtu,omitempty"` // outbound: learned from ICMP
	Names
	// a route-based SA: its XFRM interface id, mark (value/mask) and
	// the route-based interface ([[interface]] name) that carries it
	IfID      uint32 `json:"if_id,omitempty"`
	Mark      string `json:"mark,omitempty"`
	Interface string `json:"interface,omitempty"`
}

// Names are charon's names of the CHILD_SA an SA or tunnel belongs to,
// when VICI tells them (empty otherwise): engine.Names with JSON names
// (one converts to the other).
type Names struct {
	Conn     string `json:"conn,omitempty"`
	Child    string `json:"child,omitempty"`
	ChildID  uint32 `json:"child_id,omitempty"`
	IKEID    uint32 `json:"ike_id,omitempty"`
	RemoteID string `json:"remote_id,omitempty"`
	Remote   string `json:"remote,omitempty"`
}

// Policy is a policy as swanpathctl shows it.
type Policy struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Proto    uint8  `json:"proto,omitempty"`
	Sport    string `json:"sport,omitempty"`
	Dport    string `json:"dport,omitempty"`
	Dir      string `json:"dir"`
	Action   string `json:"action"`
	Priority uint32 `json:"priority"`
	Reqid    uint32 `json:"reqid"`
	Mode     string `json:"mode"`
	TmplSrc  string `json:"tmpl_src,omitempty"`
	TmplDst  string `json:"tmpl_dst,omitempty"`
	SPI      string `json:"spi,omitempty"` // SA bound (outbound)
	Refs     int    `json:"refs"`
	Conn     string `json:"conn,omitempty"`
	Child    string `json:"child,omitempty"`
	ChildID  uint32 `json:"child_id,omitempty"`
	IKEID    uint32 `json:"ike_id,omitempty"`
}

// Port is a port with its counters.
type Port struct {
	Name     string            `json:"name"`
	Device   string            `json:"device"`
	Tap      string            `json:"tap"`
	MAC      string            `json:"mac"`
	Counters map[string]uint64 `json:"counters"`
}

// Stats is the reply to "stats".
type Stats struct {
	Ports []Port `json:"ports"`
	// Latency: frames handed to the wire since start, by the time they
	// spent in the fast path (receive burst to transmit queue)
	Latency *Latency `json:"latency,omitempty"`
}

// Latency is a histogram: Counts[i] frames took at least LowNS[i]
// nanoseconds and less than LowNS[i+1] (every bucket, so that two readings
// can be subtracted).
type Latency struct {
	Frames   uint64   `json:"frames"`
	MedianNS int64    `json:"median_ns"`
	P99NS    int64    `json:"p99_ns"`
	LowNS    []int64  `json:"low_ns"`
	Counts   []uint64 `json:"counts"`
}

// NewLatency is the view of a histogram, with its median and p99.
func NewLatency(l dataplane.Latency) *Latency {
	out := &Latency{Frames: l.Frames(), MedianNS: int64(l.Quantile(0.5)), P99NS: int64(l.Quantile(0.99))}
	for _, b := range l.Buckets {
		out.LowNS = append(out.LowNS, int64(b.Low))
		out.Counts = append(out.Counts, b.Count)
	}
	return out
}

// Histogram is the histogram the view shows.
func (l *Latency) Histogram() dataplane.Latency {
	var h dataplane.Latency
	for i, low := range l.LowNS {
		if i < len(l.Counts) {
			h.Buckets = append(h.Buckets, dataplane.LatencyBucket{Low: time.Duration(low), Count: l.Counts[i]})
		}
	}
	return h
}

// Source gives the views; swanpathd implements it.
type Source interface {
	SAs() []SA
	Policies() []Policy
	Stats() Stats
}

// Request is what the client sends.
type Request struct {
	Cmd string `json:"cmd"`
}

// Reply is what the server answers; exactly one field besides Error is set.
type Reply struct {
	Error    string   `json:"error,omitempty"`
	SAs      []SA     `json:"sas,omitempty"`
	Policies []Policy `json:"policies,omitempty"`
	Stats    *Stats   `json:"stats,omitempty"`
	Tunnels  []Tunnel `json:"tunnels,omitempty"`
}

// Server serves Source on a unix socket.
type Server struct {
	log *slog.Logger
	src Source
	ln  *net.UnixListener
	wg  sync.WaitGroup
}

// Listen creates the socket (rundir.Listen: parent directory 0700 and
// owned by us, made so if missing, refused otherwise or if a symlink; a
// stale socket removed, a live one refused; socket 0600; root peers only)
// and serves until ctx is done or Close is called.
func Listen(ctx context.Context, log *slog.Logger, path string, src Source) (*Server, error) {
	ln, err := rundir.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{log: log, src: src, ln: ln}
	s.wg.Add(1)
	go s.serve(ctx)
	go func() { <-ctx.Done(); ln.Close() }()
	return s, nil
}

// Close stops serving and waits for open connections.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) serve(ctx context.Context) {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("control socket accept", "err", err)
			}
			return
		}
		// root only, also if the socket's mode or directory were loosened:
		// the views name every SA, policy and counter of the gateway
		cred, err := peercred.Of(c)
		if err == nil && cred.Uid != 0 {
			err = fmt.Errorf("uid %d (pid %d) is not root", cred.Uid, cred.Pid)
		}
		if err != nil {
			s.log.Warn("control socket: refusing peer", "err", err)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var req Request
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(c, 4096)))
	if err := dec.Decode(&req); err != nil {
		s.log.Warn("control socket: bad request, closing", "err", err)
		_ = json.NewEncoder(c).Encode(Reply{Error: "bad request: " + err.Error()})
		return
	}
	var rep Reply
	switch req.Cmd {
	case "sa":
		rep.SAs = s.src.SAs()
		if rep.SAs == nil {
			rep.SAs = []SA{}
		}
	case "policy":
		rep.Policies = s.src.Policies()
		if rep.Policies == nil {
			rep.Policies = []Policy{}
		}
	case "stats":
		st := s.src.Stats()
		rep.Stats = &st
	case "tunnels":
		if ts, ok := s.src.(TunnelSource); ok {
			rep.Tunnels = ts.Tunnels()
		}
		if rep.Tunnels == nil {
			rep.Tunnels = []Tunnel{}
		}
	default:
		rep.Error = fmt.Sprintf("unknown command %q", req.Cmd)
	}
	_ = json.NewEncoder(c).Encode(rep)
}

// Call sends one request to the socket at path and decodes the reply.
func Call(path, cmd string) (*Reply, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to swanpathd at %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(c).Encode(Request{Cmd: cmd}); err != nil {
		return nil, fmt.Errorf("send %s: %w", cmd, err)
	}
	var rep Reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return nil, fmt.Errorf("read reply to %s: %w", cmd, err)
	}
	if rep.Error != "" {
		return nil, fmt.Errorf("swanpathd: %s", rep.Error)
	}
	return &rep, nil
}
