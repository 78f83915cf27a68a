package fastpath

// The policy tables' rebuild state machine, in pure Go (no cgo here, so
// rebuild_test.go runs it under -race without root or EAL). What it
// rebuilds — the snapshot of the policy set, the rte_acl build, the
// publication — is tableOps, implemented with cgo in policy.go.
//
// change → changedLocked: up to coalesceAbove policies, publish now
// under the lock; beyond, a timer → rebuild: snapshot under the lock,
// build outside it, install under it unless a policy went out meanwhile
// (then stale: the next rebuild runs under the lock) → followUpLocked
// schedules the next if the policy set moved on.

import (
	"log/slog"
	"sync"
	"time"
)

// coalesceAbove is the number of policies from which policy table rebuilds
// are coalesced (see changedLocked).
const coalesceAbove = 100

// tableOps is what a rebuild does to the tables. snapshotLocked,
// installLocked and sizeLocked run under the owner's lock, build and
// discard outside it.
type tableOps[S, T any] interface {
	// snapshotLocked takes the policy set to build from.
	snapshotLocked() S
	// build builds the tables of a snapshot (no lock).
	build(S) (T, error)
	// installLocked publishes built tables and reclaims the old ones.
	installLocked(T, S)
	// discard frees tables never published.
	discard(T)
	// sizeLocked is the number of policies.
	sizeLocked() int
}

// stopper is a pending timer (*time.Timer, or a test's fake).
type stopper interface{ Stop() bool }

// snap is a snapshot with the change counters of its moment.
type snap[S any] struct {
	s            S
	gen, removed uint64
	start        time.Time
}

// rebuilder schedules the rebuilds of the policy tables. Its fields are
// guarded by mu, the owner's lock (Fastpath.mu), under which every
// *Locked method runs.
type rebuilder[S, T any] struct {
	mu    *sync.Mutex
	ops   tableOps[S, T]
	log   *slog.Logger
	after func(time.Duration, func()) stopper // time.AfterFunc
	wg    sync.WaitGroup                      // rebuilds outside mu

	// the last rebuild, its cost, the next one due
	lastPublish time.Time
	lastBuild   time.Duration
	timer       stopper
	// gen counts policy changes, removed the changes that took a
	// policy out (deleted or replaced); pubGen is gen as of the
	// published tables. building: a rebuild runs outside the lock.
	gen, removed, pubGen uint64
	building             bool
	stale                bool   // a rebuild was thrown away: the next runs under the lock
	installs             uint64 // policy tables published
	timerSeq             uint64 // which timer is timer
	closing              bool   // teardown: no more rebuilds
}

func newRebuilder[S, T any](mu *sync.Mutex, ops tableOps[S, T], log *slog.Logger) *rebuilder[S, T] {
	return &rebuilder[S, T]{mu: mu, ops: ops, log: log,
		after: func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }}
}

// noteLocked counts a change of the policy set; removed: a policy went
// out of it (deleted or replaced).
func (r *rebuilder[S, T]) noteLocked(removed bool) {
	r.gen++
	if removed {
		r.removed++
	}
}

// settledLocked says whether the published tables carry every change and
// no rebuild is due or running.
func (r *rebuilder[S, T]) settledLocked() bool {
	return r.pubGen == r.gen && !r.building && r.timer == nil
}

// changedLocked publishes the policy tables now, or soon when they are big
// and were rebuilt a moment ago. The caller counted the change
// (noteLocked).
func (r *rebuilder[S, T]) changedLocked() error {
	if r.timer != nil || r.building {
		return nil // a rebuild is due, or runs and follows up
	}
	// Up to a hundred policies the tables are rebuilt at once, so that a
	// policy is in force when charon's request returns. Beyond, outside the
	// lock and at most once per interval of a few times the last rebuild's
	// cost, so that a burst of installs neither waits for rebuilds nor
	// rebuilds per policy.
	if r.ops.sizeLocked() < coalesceAbove {
		return r.publishLocked()
	}
	if r.closing {
		return nil
	}
	every := min(4*r.lastBuild, 100*time.Millisecond)
	wait := max(every-time.Since(r.lastPublish), 0)
	r.timerSeq++
	seq := r.timerSeq
	r.timer = r.after(wait, func() { r.rebuild(seq) })
	return nil
}

// publishLocked rebuilds the policy tables under the lock and publishes
// them.
func (r *rebuilder[S, T]) publishLocked() error {
	r.stopTimerLocked()
	s := r.snapshotLocked()
	t, err := r.ops.build(s.s)
	if err != nil {
		return err
	}
	r.installLocked(t, s)
	return nil
}

func (r *rebuilder[S, T]) stopTimerLocked() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

func (r *rebuilder[S, T]) snapshotLocked() snap[S] {
	return snap[S]{gen: r.gen, removed: r.removed, start: time.Now(), s: r.ops.snapshotLocked()}
}

// installLocked publishes t. No policy may have been removed since s was
// taken.
func (r *rebuilder[S, T]) installLocked(t T, s snap[S]) {
	r.lastBuild = time.Since(s.start)
	r.ops.installLocked(t, s.s)
	r.pubGen = s.gen
	r.installs++
	r.stale = false
	r.lastPublish = time.Now()
}

// rebuild rebuilds the policy tables outside the lock, so that requests go
// on meanwhile: policies added meanwhile wait for the next rebuild, binding
// changes are taken over when the tables are installed. If a policy was
// removed meanwhile, the tables are stale: they are thrown away and the
// next rebuild runs under the lock (so that a stream of removals cannot
// starve the rebuilds).
func (r *rebuilder[S, T]) rebuild(seq uint64) {
	r.mu.Lock()
	if r.timerSeq == seq {
		r.timer = nil // this one fired (not a later one)
	}
	if r.closing || r.building {
		r.mu.Unlock()
		return
	}
	if r.stale {
		err := r.publishLocked()
		if err != nil {
			r.log.Error("policy tables not rebuilt", "err", err)
		} else {
			r.followUpLocked()
		}
		r.mu.Unlock()
		return
	}
	r.building = true
	r.wg.Add(1)
	defer r.wg.Done()
	s := r.snapshotLocked()
	r.mu.Unlock()

	t, err := r.ops.build(s.s)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.building = false
	switch {
	case err != nil:
		// the next change tries again
		r.log.Error("policy tables not rebuilt", "err", err)
		return
	case r.closing:
		r.ops.discard(t)
		return
	case s.removed != r.removed || s.gen < r.pubGen:
		r.ops.discard(t)
		r.stale = s.removed != r.removed
	default:
		r.installLocked(t, s)
	}
	r.followUpLocked()
}

// followUpLocked schedules the next rebuild if the policies changed since
// the published tables.
func (r *rebuilder[S, T]) followUpLocked() {
	if r.gen != r.pubGen {
		if err := r.changedLocked(); err != nil {
			r.log.Error("policy tables not rebuilt", "err", err)
		}
	}
}

// closeLocked stops the rebuilds: none starts from now on, the one
// running outside the lock finishes (the lock is let go meanwhile) and
// the one due is cancelled.
func (r *rebuilder[S, T]) closeLocked() {
	r.closing = true
	if r.building {
		r.mu.Unlock()
		r.wg.Wait()
		r.mu.Lock()
	}
	r.stopTimerLocked()
}
