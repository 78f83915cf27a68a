package pluginsock

import "github.com/swanpath/swanpath/bridge/engine"

// The engine knows no transport: these put its calls and events in the
// plugin protocol's types.

var (
	_ Handler        = engineHandler{}
	_ SessionHandler = engineHandler{}
)

// engineHandler serves the plugin socket with the engine.
type engineHandler struct{ *engine.Engine }

// ForEngine is the Handler (and SessionHandler) that Listen takes for e.
func ForEngine(e *engine.Engine) Handler { return engineHandler{e} }

func (h engineHandler) Connected(conn uint64, hello Hello) { h.Engine.Connected(conn, hello.PID) }

func (h engineHandler) ReplayDone(conn uint64, r ReplayDone) {
	h.Engine.ReplayDone(conn, r.Replayed, r.Failed)
}

// engineKinds maps the engine's events to the plugin protocol's.
var engineKinds = map[engine.EventKind]EventKind{
	engine.EventExpire:  EventExpire,
	engine.EventAcquire: EventAcquire,
	engine.EventMapping: EventMapping,
}

// FromEngine is an engine event as the plugin protocol carries it; an
// unknown kind stays 0, which EventMessage refuses.
func FromEngine(ev engine.Event) Event {
	return Event{Kind: engineKinds[ev.Kind], SA: ev.SA, Hard: ev.Hard, Reqid: ev.Reqid,
		Src: ev.Src, Dst: ev.Dst, NewPort: ev.NewPort}
}

// NotifyEngine sends an engine event to every connected plugin (see
// Notify).
func (s *Server) NotifyEngine(ev engine.Event) { s.Notify(FromEngine(ev)) }
