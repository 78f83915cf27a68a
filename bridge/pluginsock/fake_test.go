package pluginsock

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/swanpath/swanpath/bridge/model"
)

// fakeHandler keeps SAs and policies in memory and records every call.
type fakeHandler struct {
	stats  model.SAStats           // what QuerySA answers
	refuse func(sa *model.SA) bool // AddSA fails for these

	mu struct {
		sync.Mutex
		nextSPI  uint32
		sas      map[model.SAID]model.SA
		given    []*model.SA // every SA AddSA was called with, as given
		policies map[model.PolicyID]int
		calls    []string
		changed  chan struct{}
	}
}

var _ Handler = (*fakeHandler)(nil)

func newFakeHandler() *fakeHandler {
	f := &fakeHandler{stats: model.SAStats{Bytes: 123456, Packets: 789, LastUse: time.Now().Add(-3 * time.Second).Truncate(time.Second)}}
	f.mu.nextSPI = 0xc0000100
	f.mu.sas = map[model.SAID]model.SA{}
	f.mu.policies = map[model.PolicyID]int{}
	f.mu.changed = make(chan struct{})
	return f
}

// recordLocked notes a call and wakes waiters.
func (f *fakeHandler) recordLocked(format string, args ...any) {
	f.mu.calls = append(f.mu.calls, fmt.Sprintf(format, args...))
	close(f.mu.changed)
	f.mu.changed = make(chan struct{})
}

// waitFor polls cond under the lock until it holds or ctx ends.
func (f *fakeHandler) waitFor(ctx context.Context, cond func(f *fakeHandler) bool) error {
	for {
		f.mu.Lock()
		ok := cond(f)
		ch := f.mu.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *fakeHandler) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.mu.calls...)
}

func (f *fakeHandler) GetSPI(ctx context.Context, src, dst netip.Addr, proto uint8) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for inUse := true; inUse; {
		f.mu.nextSPI++
		_, inUse = f.mu.sas[model.SAID{Dst: dst, SPI: f.mu.nextSPI, Proto: proto}]
	}
	f.recordLocked("GetSPI %s %s %d", src, dst, proto)
	return f.mu.nextSPI, nil
}

func (f *fakeHandler) AddSA(ctx context.Context, sa *model.SA) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.given = append(f.mu.given, sa)
	if _, ok := f.mu.sas[sa.SAID]; ok {
		return fmt.Errorf("add SA %s: %w", sa.SAID, model.ErrExists)
	}
	if err := sa.Validate(); err != nil {
		return fmt.Errorf("add SA %s: %w", sa.SAID, err)
	}
	if f.refuse != nil && f.refuse(sa) {
		f.recordLocked("AddSA refused %s", sa.SAID)
		return fmt.Errorf("add SA %s: refused by the test", sa.SAID)
	}
	c := *sa
	c.EncKey = append(model.Key(nil), sa.EncKey...)
	c.IntKey = append(model.Key(nil), sa.IntKey...)
	f.mu.sas[sa.SAID] = c
	f.recordLocked("AddSA %s", sa.SAID)
	return nil
}

func (f *fakeHandler) UpdateSA(ctx context.Context, id model.SAID, src netip.Addr, newSrc, newDst netip.Addr, newSport, newDport uint16, encap bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sa, ok := f.mu.sas[id]
	if !ok {
		return fmt.Errorf("update SA %s: %w", id, model.ErrNotFound)
	}
	delete(f.mu.sas, id)
	sa.Src, sa.Dst, sa.SrcPort, sa.DstPort, sa.Encap = newSrc, newDst, newSport, newDport, encap
	f.mu.sas[sa.SAID] = sa
	f.recordLocked("UpdateSA %s", id)
	return nil
}

func (f *fakeHandler) QuerySA(ctx context.Context, id model.SAID) (model.SAStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked("QuerySA %s", id)
	if _, ok := f.mu.sas[id]; !ok {
		return model.SAStats{}, fmt.Errorf("query SA %s: %w", id, model.ErrNotFound)
	}
	return f.stats, nil
}

func (f *fakeHandler) DelSA(ctx context.Context, id model.SAID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked("DelSA %s", id)
	sa, ok := f.mu.sas[id]
	if !ok {
		return fmt.Errorf("del SA %s: %w", id, model.ErrNotFound)
	}
	sa.Wipe()
	delete(f.mu.sas, id)
	return nil
}

func (f *fakeHandler) FlushSAs(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.sas = map[model.SAID]model.SA{}
	f.recordLocked("FlushSAs")
	return nil
}

func (f *fakeHandler) AddPolicy(ctx context.Context, p *model.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.policies[p.PolicyID]++
	f.recordLocked("AddPolicy %s %s", p.Sel, p.Dir)
	return nil
}

func (f *fakeHandler) QueryPolicy(ctx context.Context, id model.PolicyID) (model.SAStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked("QueryPolicy %s %s", id.Sel, id.Dir)
	if f.mu.policies[id] == 0 {
		return model.SAStats{}, fmt.Errorf("query policy %s: %w", id.Sel, model.ErrNotFound)
	}
	return model.SAStats{LastUse: f.stats.LastUse}, nil
}

func (f *fakeHandler) DelPolicy(ctx context.Context, id model.PolicyID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked("DelPolicy %s %s", id.Sel, id.Dir)
	if f.mu.policies[id] == 0 {
		return fmt.Errorf("del policy %s: %w", id.Sel, model.ErrNotFound)
	}
	if f.mu.policies[id]--; f.mu.policies[id] == 0 {
		delete(f.mu.policies, id)
	}
	return nil
}

func (f *fakeHandler) FlushPolicies(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.policies = map[model.PolicyID]int{}
	f.recordLocked("FlushPolicies")
	return nil
}

var _ SessionHandler = (*fakeHandler)(nil)

func (f *fakeHandler) Connected(conn uint64, h Hello) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked("connected %d %s", conn, h.Name)
}

func (f *fakeHandler) ReplayDone(conn uint64, r ReplayDone) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked("replay-done %d %d/%d", conn, r.Replayed, r.Failed)
}

func (f *fakeHandler) Disconnected(conn uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordLocked("disconnected %d", conn)
}
