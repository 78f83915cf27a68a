package engine

import "time"

// Failing closed. Linux keeps its XFRM policies when the IKE daemon
// restarts; swanpathd loses them when it restarts itself, and gets them
// back only when charon's plugin replays them. Until then, and whenever no
// charon is connected and no policy is left (charon stopped and removed
// them), a packet of a protected flow would find no policy and leave in
// clear. So the fast path starts closed (only ARP, neighbour discovery and
// the gateway's own IKE pass) and opens when a plugin says its replay is
// done; it closes again when the last plugin is gone and no policy is left.

// The plugin socket (pluginsock.ForEngine) reports the connections' life
// with the three calls below; conn identifies a connection for its life.

// Connected records a plugin connection (the plugin's process id pid);
// its replay follows (SAs and policies that AddSA and AddPolicy see as
// replayed until ReplayDone).
func (e *Engine) Connected(conn uint64, pid uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mu.plugins[conn] = false
	e.mu.pids[conn] = pid
	if e.mu.closed {
		e.log.Info("fast path closed until the plugin's replay is done", "pid", pid)
	}
}

// ReplayDone opens the fast path: what charon had installed is back (a
// policy whose SA was refused drops its traffic, as on the kernel); the
// plugin sent replayed SAs and policies again, refused of them failed.
func (e *Engine) ReplayDone(conn uint64, replayed, refused uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.mu.plugins[conn]; !ok {
		return
	}
	e.mu.plugins[conn] = true
	e.reconcileStartLocked(conn, replayed, time.Now())
	if refused != 0 {
		e.log.Warn("plugin replay: some SAs or policies were refused", "replayed", replayed, "refused", refused)
	}
	e.updateClosedLocked()
}

// Disconnected forgets a plugin connection.
func (e *Engine) Disconnected(conn uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.mu.plugins, conn)
	e.updateClosedLocked()
}

// Replaying reports whether a plugin is replaying (between its HELLO and
// its REPLAY_DONE): SAs added then existed before the connection.
func (e *Engine) Replaying() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.replayingLocked()
}

func (e *Engine) replayingLocked() bool {
	for _, done := range e.mu.plugins {
		if !done {
			return true
		}
	}
	return false
}

// replayingConnLocked reports whether plugin connection conn is replaying.
func (e *Engine) replayingConnLocked(conn uint64) bool {
	done, ok := e.mu.plugins[conn]
	return ok && !done
}

// Closed reports whether the fast path fails closed.
func (e *Engine) Closed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mu.closed
}

// updateClosedLocked opens the fast path while a plugin that has replayed
// is connected, or policies are installed; else it closes it.
func (e *Engine) updateClosedLocked() {
	open := len(e.mu.policies) > 0 && e.mu.replayed
	for _, done := range e.mu.plugins {
		if done {
			open = true
			e.mu.replayed = true
		}
	}
	if open == !e.mu.closed {
		return
	}
	e.mu.closed = !open
	e.dp.SetClosed(e.mu.closed)
	if e.mu.closed {
		e.log.Warn("fast path closed: no charon and no policy; only ARP, neighbour discovery and IKE pass")
	} else {
		e.log.Info("fast path open: forwarding by policy")
	}
}
