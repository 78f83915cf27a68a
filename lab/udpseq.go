package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SeqOptions shape a UDPSeq stream.
type SeqOptions struct {
	From     string        // sending namespace role, e.g. H1
	To       string        // receiving namespace role, e.g. H2
	ToAddr   string        // the receiver's address, e.g. H2Addr
	Port     int           // the receiver's UDP port
	Rate     int           // datagrams per second
	Duration time.Duration // sending time at Rate; Rate*Duration datagrams in all
	Size     int           // UDP payload bytes, at least 16 (default 64)
}

// UDPSeq is a paced stream of UDP datagrams from one lab host to another,
// sent and received by the test process itself through sockets opened
// inside the namespaces. Each payload carries the stream's random id and a
// sequence number (0, 1, ...) followed by bytes derived from it; the
// receiver counts how often each number arrived intact. It shows exactly
// what a path loses, duplicates or corrupts, e.g. across rekeys.
type UDPSeq struct {
	opts   SeqOptions
	id     uint64
	total  int // datagrams to send
	raddr  *net.UDPAddr
	rx, tx net.PacketConn
	cancel context.CancelFunc

	sendDone chan struct{}
	rxDone   chan struct{}
	stopOnce sync.Once

	// written by the sender before sendDone is closed
	start   time.Time
	sentAt  []time.Duration
	sent    int
	sendErr error

	mu struct {
		sync.Mutex
		counts     []uint16 // arrivals per sequence number
		received   int      // distinct numbers
		lastRx     time.Time
		unexpected int // this stream's id, number never sent
		corrupt    int // this stream's id, payload damaged
		foreign    int // not of this stream
	}
}

// SeqResult is what a UDPSeq stream sent and what arrived.
type SeqResult struct {
	Sent       int             // datagrams sent, numbers 0..Sent-1
	Received   int             // distinct numbers that arrived intact
	Duplicates int             // arrivals beyond the first of a number
	Unexpected int             // arrivals of a number never sent
	Corrupt    int             // arrivals whose payload was damaged
	Foreign    int             // datagrams not of this stream
	Missing    []uint64        // numbers sent that never arrived
	Duplicated []uint64        // numbers that arrived more than once
	Start      time.Time       // first datagram sent
	Elapsed    time.Duration   // sending time
	SentAt     []time.Duration // per number, since Start
}

// Exact says whether the set of numbers received intact equals the set
// sent, each exactly once.
func (r SeqResult) Exact() bool {
	return r.Sent > 0 && r.Received == r.Sent && r.Duplicates == 0 && r.Unexpected == 0 && r.Corrupt == 0
}

func (r SeqResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sent %d in %.1fs, received %d distinct, %d duplicates, %d unexpected, %d corrupt, %d foreign",
		r.Sent, r.Elapsed.Seconds(), r.Received, r.Duplicates, r.Unexpected, r.Corrupt, r.Foreign)
	if len(r.Missing) > 0 {
		fmt.Fprintf(&b, "; missing %d: %s", len(r.Missing), r.ranges(r.Missing))
	}
	if len(r.Duplicated) > 0 {
		fmt.Fprintf(&b, "; duplicated %d: %s", len(r.Duplicated), r.ranges(r.Duplicated))
	}
	return b.String()
}

// ranges prints sorted numbers as runs with their send times, at most 20.
func (r SeqResult) ranges(seqs []uint64) string {
	var parts []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if len(parts) == 20 {
			parts = append(parts, "...")
			break
		}
		at := func(s uint64) string {
			if s < uint64(len(r.SentAt)) {
				return fmt.Sprintf("%.3fs", r.SentAt[s].Seconds())
			}
			return "?"
		}
		if i == j {
			parts = append(parts, fmt.Sprintf("%d (sent at %s)", seqs[i], at(seqs[i])))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d (sent at %s-%s)", seqs[i], seqs[j], at(seqs[i]), at(seqs[j])))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

const seqHeader = 16 // stream id, sequence number

// StartUDPSeq opens the receiver in o.To and the sender in o.From and starts
// sending. Wait collects the result; the lab's cleanup stops a stream that
// is never waited for.
func (l *Lab) StartUDPSeq(ctx context.Context, o SeqOptions) (*UDPSeq, error) {
	if o.Size == 0 {
		o.Size = 64
	}
	if o.Size < seqHeader || o.Rate <= 0 || o.Duration <= 0 {
		return nil, fmt.Errorf("udp seq: bad options %+v", o)
	}
	ip := net.ParseIP(o.ToAddr)
	if ip == nil {
		return nil, fmt.Errorf("udp seq: bad address %q", o.ToAddr)
	}
	s := &UDPSeq{opts: o, raddr: &net.UDPAddr{IP: ip, Port: o.Port},
		total: int(float64(o.Rate) * o.Duration.Seconds()), sendDone: make(chan struct{}), rxDone: make(chan struct{})}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	s.id = binary.BigEndian.Uint64(id[:])
	s.mu.counts = make([]uint16, s.total)
	s.sentAt = make([]time.Duration, s.total)

	from, to := l.Host(o.From), l.Host(o.To)
	if from == nil || to == nil {
		return nil, fmt.Errorf("udp seq: no host %q or %q in the lab", o.From, o.To)
	}
	network := "udp4"
	if ip.To4() == nil {
		network = "udp6"
	}
	var err error
	if s.rx, err = to.ListenPacket(network, s.raddr.String()); err != nil {
		return nil, fmt.Errorf("udp seq: receiver in %s: %w", o.To, err)
	}
	// A large receive buffer: the test process may be descheduled for a
	// while on a loaded machine; the stream must not lose in our socket.
	if sc, ok := s.rx.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
			})
		}
	}
	// Unconnected: a connected UDP socket would fail a send after any
	// ICMP error instead of sending.
	if s.tx, err = from.ListenPacket(network, ":0"); err != nil {
		s.rx.Close()
		return nil, fmt.Errorf("udp seq: sender in %s: %w", o.From, err)
	}

	ctx, s.cancel = context.WithCancel(ctx)
	l.t.Cleanup(s.stop)
	go s.receive()
	go s.send(ctx)
	return s, nil
}

func (s *UDPSeq) send(ctx context.Context) {
	defer close(s.sendDone)
	buf := make([]byte, s.opts.Size)
	binary.BigEndian.PutUint64(buf[0:], s.id)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	s.start = time.Now()
	for s.sent < s.total {
		due := min(int(time.Since(s.start).Seconds()*float64(s.opts.Rate))+1, s.total)
		// after a stall, catch up in bounded bursts
		for burst := 0; s.sent < due && burst < 64; burst++ {
			fill(buf, s.id, uint64(s.sent))
			s.sentAt[s.sent] = time.Since(s.start)
			if _, err := s.tx.WriteTo(buf, s.raddr); err != nil {
				s.sendErr = fmt.Errorf("udp seq: send %d: %w", s.sent, err)
				return
			}
			s.sent++
		}
		select {
		case <-ctx.Done():
			s.sendErr = fmt.Errorf("udp seq: sending stopped after %d of %d: %w", s.sent, s.total, ctx.Err())
			return
		case <-tick.C:
		}
	}
}

// fill writes the header and the bytes derived from seq into buf.
func fill(buf []byte, id, seq uint64) {
	binary.BigEndian.PutUint64(buf[0:], id)
	binary.BigEndian.PutUint64(buf[8:], seq)
	for i := seqHeader; i < len(buf); i++ {
		buf[i] = byte(seq) + byte(i)
	}
}

func (s *UDPSeq) receive() {
	defer close(s.rxDone)
	buf := make([]byte, 65536)
	want := make([]byte, s.opts.Size)
	for {
		n, _, err := s.rx.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		s.mu.lastRx = time.Now()
		switch {
		case n < seqHeader || binary.BigEndian.Uint64(buf[0:]) != s.id:
			s.mu.foreign++
		case binary.BigEndian.Uint64(buf[8:]) >= uint64(s.total):
			s.mu.unexpected++
		default:
			seq := binary.BigEndian.Uint64(buf[8:])
			fill(want, s.id, seq)
			if n != len(want) || string(buf[:n]) != string(want) {
				s.mu.corrupt++
				break
			}
			if s.mu.counts[seq] == 0 {
				s.mu.received++
			}
			if s.mu.counts[seq] < 0xffff {
				s.mu.counts[seq]++
			}
		}
		s.mu.Unlock()
	}
}

// Wait waits until everything is sent, then until every datagram arrived or
// none arrived for quiet (2 s), and returns the result. The error reports a
// failed or cancelled sender; losses are in the result, not the error.
func (s *UDPSeq) Wait(ctx context.Context) (SeqResult, error) {
	select {
	case <-s.sendDone:
	case <-ctx.Done():
		s.stop()
		return SeqResult{}, fmt.Errorf("udp seq %s -> %s: %w", s.opts.From, s.opts.To, ctx.Err())
	}
	const quiet = 2 * time.Second
	drained := time.Now()
	_ = Poll(ctx, "udp seq drained", 10*time.Millisecond, func() (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		last := drained
		if s.mu.lastRx.After(last) {
			last = s.mu.lastRx
		}
		return s.mu.received >= s.sent || time.Since(last) > quiet, nil
	})
	s.stop()

	r := SeqResult{Sent: s.sent, Start: s.start, SentAt: s.sentAt[:s.sent]}
	if s.sent > 0 {
		r.Elapsed = s.sentAt[s.sent-1]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.Received, r.Unexpected, r.Corrupt, r.Foreign = s.mu.received, s.mu.unexpected, s.mu.corrupt, s.mu.foreign
	for seq, c := range s.mu.counts[:s.sent] {
		switch {
		case c == 0:
			r.Missing = append(r.Missing, uint64(seq))
		case c > 1:
			r.Duplicated = append(r.Duplicated, uint64(seq))
			r.Duplicates += int(c) - 1
		}
	}
	// arrivals of numbers the sender never got to (it failed early)
	for _, c := range s.mu.counts[s.sent:] {
		r.Unexpected += int(c)
	}
	return r, s.sendErr
}

// stop ends both goroutines and closes the sockets.
func (s *UDPSeq) stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		<-s.sendDone
		s.rx.Close()
		s.tx.Close()
		<-s.rxDone
	})
}

// RunUDPSeqs runs the streams at once and fails t unless every one
// arrived exactly (each datagram once, intact).
func (l *Lab) RunUDPSeqs(ctx context.Context, t testing.TB, streams ...SeqOptions) {
	t.Helper()
	var seqs []*UDPSeq
	for _, o := range streams {
		s, err := l.StartUDPSeq(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s)
	}
	for j, s := range seqs {
		r, err := s.Wait(ctx)
		if err != nil || !r.Exact() {
			t.Fatalf("UDP %s -> %s: %v: %s", streams[j].From, streams[j].To, err, r)
		}
	}
}
