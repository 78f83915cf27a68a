// Package vici follows charon over its VICI socket (govici): the names of
// the CHILD_SAs and IKE_SAs that the plugin socket knows only by SPI and
// reqid. It lists the SAs (list-sas) when it connects and again after
// every event it is subscribed to (child-updown, child-rekey, ike-updown,
// ike-rekey): the events are only triggers. govici drops an event when its
// channel is full; a full channel holds events still to come, each of them
// another resync, so no change is missed; a periodic resync covers the rest.
// It reconnects when charon restarts.
package vici

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/strongswan/govici/vici"
)

// DefaultSocket is charon's VICI socket unless strongswan.conf moves it.
const DefaultSocket = "/var/run/charon.vici"

// Child is one CHILD_SA as charon lists it, with the IKE_SA it belongs to.
type Child struct {
	Conn     string // connection (IKE_SA config) name
	Child    string // CHILD_SA config name
	ChildID  uint32 // CHILD_SA unique id
	IKEID    uint32 // IKE_SA unique id
	Reqid    uint32
	SPIIn    uint32
	SPIOut   uint32
	State    string // INSTALLED, REKEYED, ...
	Mode     string
	RemoteID string // remote identity
	Remote   string // remote address
}

// Sink receives every full listing: connected false (and no children)
// when VICI is not reachable.
type Sink func(connected bool, children []Child)

// Events are what the watcher subscribes to.
var Events = []string{"child-updown", "child-rekey", "ike-updown", "ike-rekey"}

// Watcher follows one charon.
type Watcher struct {
	Log    *slog.Logger
	Socket string
	Sink   Sink
	// Retry is the wait before reconnecting (default 1 s); Resync the
	// period of the full listing without events (default 30 s).
	Retry, Resync time.Duration
}

// Run follows charon until ctx is done. It says once that VICI is not
// reachable (names stay empty) and once when it is again.
func (w *Watcher) Run(ctx context.Context) error {
	retry, resync := w.Retry, w.Resync
	if retry == 0 {
		retry = time.Second
	}
	if resync == 0 {
		resync = 30 * time.Second
	}
	warned := false
	for {
		err := w.session(ctx, resync, func() {
			if warned {
				w.Log.Info("VICI: connected to charon, SAs get their names", "socket", w.Socket)
			}
			warned = false
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.Sink(false, nil)
		if !warned {
			w.Log.Warn("VICI: charon not reachable, SAs and policies have no names until it is", "socket", w.Socket, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
	}
}

// session is one VICI connection: list, then list again on each event,
// until the connection or ctx ends.
func (w *Watcher) session(ctx context.Context, resync time.Duration, up func()) error {
	s, err := vici.NewSession(vici.WithSocketPath(w.Socket))
	if err != nil {
		return err
	}
	defer s.Close()
	evs := make(chan vici.Event, 64)
	s.NotifyEvents(evs)
	if err := s.Subscribe(Events...); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	list := func() error {
		cs, err := ListChildren(ctx, s)
		if err != nil {
			return err
		}
		w.Sink(true, cs)
		return nil
	}
	if err := list(); err != nil {
		return err
	}
	up()
	t := time.NewTicker(resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-evs:
			if !ok {
				return errors.New("charon closed the VICI connection")
			}
			// drain what is queued: one listing covers it all
		drain:
			for {
				select {
				case _, ok := <-evs:
					if !ok {
						return errors.New("charon closed the VICI connection")
					}
				default:
					break drain
				}
			}
		case <-t.C:
		}
		if err := list(); err != nil {
			return err
		}
	}
}

// ListChildren lists every CHILD_SA of every IKE_SA (list-sas).
func ListChildren(ctx context.Context, s *vici.Session) ([]Child, error) {
	var out []Child
	for m, err := range s.CallStreaming(ctx, "list-sas", "list-sa", nil) {
		if err != nil {
			return nil, fmt.Errorf("list-sas: %w", err)
		}
		for _, name := range m.Keys() {
			if ike, ok := m.Get(name).(*vici.Message); ok {
				out = append(out, ParseIKE(name, ike)...)
			}
		}
	}
	return out, nil
}

// ParseIKE reads the CHILD_SAs of one IKE_SA of a list-sa event.
func ParseIKE(conn string, ike *vici.Message) []Child {
	var out []Child
	children, _ := ike.Get("child-sas").(*vici.Message)
	if children == nil {
		return nil
	}
	ikeID := num(ike, "uniqueid", 10)
	for _, k := range children.Keys() {
		c, ok := children.Get(k).(*vici.Message)
		if !ok {
			continue
		}
		out = append(out, Child{
			Conn: conn, Child: str(c, "name"), ChildID: num(c, "uniqueid", 10), IKEID: ikeID,
			Reqid: num(c, "reqid", 10), SPIIn: num(c, "spi-in", 16), SPIOut: num(c, "spi-out", 16),
			State: str(c, "state"), Mode: str(c, "mode"),
			RemoteID: str(ike, "remote-id"), Remote: str(ike, "remote-host"),
		})
	}
	return out
}

func str(m *vici.Message, k string) string {
	s, _ := m.Get(k).(string)
	return s
}

func num(m *vici.Message, k string, base int) uint32 {
	v, err := strconv.ParseUint(str(m, k), base, 32)
	if err != nil {
		return 0
	}
	return uint32(v)
}
