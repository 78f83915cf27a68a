package pluginsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"github.com/swanpath/swanpath/bridge/model"
)

// Client speaks the plugin's side of the protocol. It is what tests and
// benchmarks use in place of charon; requests may be issued concurrently.
type Client struct {
	c      *net.UnixConn
	seq    atomic.Uint32
	events chan Event
	wg     sync.WaitGroup
	wmu    sync.Mutex

	mu struct {
		sync.Mutex
		pending map[uint32]chan *Message
		err     error // set once the connection is gone
	}
}

// StatusError is a RESULT with a status other than OK. It matches the
// model's sentinel errors with errors.Is.
type StatusError struct {
	Op      Type
	Status  Status
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Op, e.Status, e.Message)
}

func (e *StatusError) Is(target error) bool {
	switch e.Status {
	case StatusNotFound:
		return target == model.ErrNotFound
	case StatusExists:
		return target == model.ErrExists
	case StatusUnsupported:
		return target == model.ErrUnsupported
	case StatusInvalid:
		return target == model.ErrInvalid
	}
	return false
}

// ErrClosed is returned for requests on a closed or broken connection.
var ErrClosed = errors.New("plugin connection closed")

// Dial connects to swanpathd, says HELLO and ends its (empty) replay: a
// client with nothing installed before, whose SAs and policies follow.
func Dial(ctx context.Context, path string) (*Client, error) {
	c, err := DialReplay(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := c.ReplayDone(ctx, ReplayDone{}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ReplayDone tells swanpathd that the client has installed again what it
// had before the connection (see DialReplay).
func (c *Client) ReplayDone(ctx context.Context, r ReplayDone) error {
	_, err := c.Do(ctx, &Message{Type: TypeReplayDone, Replay: r})
	return err
}

// DialReplay connects to swanpathd and says HELLO, as the plugin does
// before its replay: swanpathd's fast path stays closed until ReplayDone.
func DialReplay(ctx context.Context, path string) (*Client, error) {
	c, err := dial(ctx, path)
	if err != nil {
		return nil, err
	}
	if _, err := c.Do(ctx, &Message{Type: TypeHello, Hello: Hello{Name: "swanpath pluginsock client", PID: uint32(os.Getpid())}}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dial connects without a word.
func dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	c := &Client{c: nc.(*net.UnixConn), events: make(chan Event, 1024)}
	c.mu.pending = map[uint32]chan *Message{}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.readLoop()
	}()
	return c, nil
}

// Events delivers EXPIRE, ACQUIRE and MAPPING. Events are dropped when the
// channel (1024 deep) is full. It is closed when the connection ends.
func (c *Client) Events() <-chan Event { return c.events }

// Close closes the connection and waits for the reader.
func (c *Client) Close() error {
	err := c.c.Close()
	c.wg.Wait()
	return err
}

func (c *Client) readLoop() {
	defer close(c.events)
	// RESULTs and events carry no keys: buffering is fine here
	fr := frameReader{r: bufio.NewReader(c.c)}
	var err error
	for {
		var m *Message
		m, err = fr.read()
		if err != nil {
			break
		}
		switch {
		case m.Type == TypeResult:
			c.mu.Lock()
			ch := c.mu.pending[m.Seq]
			delete(c.mu.pending, m.Seq)
			c.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		case m.Type.IsEvent():
			select {
			case c.events <- m.Event:
			default:
			}
		}
	}
	c.mu.Lock()
	c.mu.err = fmt.Errorf("%w: %w", ErrClosed, err)
	for seq, ch := range c.mu.pending {
		close(ch)
		delete(c.mu.pending, seq)
	}
	c.mu.Unlock()
}

// Do sends a request (its Seq is assigned here) and waits for its RESULT.
// A status other than OK is returned as *StatusError along with the result.
func (c *Client) Do(ctx context.Context, m *Message) (Result, error) {
	seq := c.seq.Add(1)
	if seq == 0 {
		seq = c.seq.Add(1)
	}
	m.Seq = seq
	b, err := AppendMessage(nil, m)
	if err != nil {
		return Result{}, err
	}
	defer clear(b)
	ch := make(chan *Message, 1)
	c.mu.Lock()
	if c.mu.err != nil {
		c.mu.Unlock()
		return Result{}, c.mu.err
	}
	c.mu.pending[seq] = ch
	c.mu.Unlock()

	c.wmu.Lock()
	_, err = c.c.Write(b)
	c.wmu.Unlock()
	if err != nil {
		c.forget(seq)
		return Result{}, fmt.Errorf("%s: %w", m.Type, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			return Result{}, fmt.Errorf("%s: %w", m.Type, c.mu.err)
		}
		if r.Result.Status != StatusOK {
			return r.Result, &StatusError{Op: m.Type, Status: r.Result.Status, Message: r.Result.Message}
		}
		return r.Result, nil
	case <-ctx.Done():
		c.forget(seq)
		return Result{}, fmt.Errorf("%s: %w", m.Type, ctx.Err())
	}
}

func (c *Client) forget(seq uint32) {
	c.mu.Lock()
	delete(c.mu.pending, seq)
	c.mu.Unlock()
}

// GetSPI asks for an inbound SPI.
func (c *Client) GetSPI(ctx context.Context, src, dst netip.Addr, proto uint8) (uint32, error) {
	r, err := c.Do(ctx, &Message{Type: TypeGetSPI, SA: model.SA{Src: src, SAID: model.SAID{Dst: dst, Proto: proto}}})
	return r.SPI, err
}

// AddSA installs sa (keys are copied into the frame, which is wiped).
func (c *Client) AddSA(ctx context.Context, sa *model.SA) error {
	_, err := c.Do(ctx, &Message{Type: TypeAddSA, SA: *sa})
	return err
}

// QuerySA returns the SA's counters.
func (c *Client) QuerySA(ctx context.Context, id model.SAID) (model.SAStats, error) {
	r, err := c.Do(ctx, &Message{Type: TypeQuerySA, SA: model.SA{SAID: id}})
	return r.Stats, err
}

// DelSA deletes an SA.
func (c *Client) DelSA(ctx context.Context, id model.SAID) error {
	_, err := c.Do(ctx, &Message{Type: TypeDelSA, SA: model.SA{SAID: id}})
	return err
}

// AddPolicy installs a policy.
func (c *Client) AddPolicy(ctx context.Context, p *model.Policy) error {
	_, err := c.Do(ctx, &Message{Type: TypeAddPolicy, Policy: *p})
	return err
}

// DelPolicy drops one reference of a policy.
func (c *Client) DelPolicy(ctx context.Context, id model.PolicyID) error {
	_, err := c.Do(ctx, &Message{Type: TypeDelPolicy, Policy: model.Policy{PolicyID: id}})
	return err
}
