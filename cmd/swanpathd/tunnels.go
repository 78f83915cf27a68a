package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/swanpath/swanpath/bridge/ctl"
	"github.com/swanpath/swanpath/bridge/engine"
	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/bridge/vici"
)

// rates samples every SA's counters each second, for the current rate
// `swanpathctl tunnels` shows.
type rates struct {
	mu   sync.Mutex
	last map[model.SAID]sample
	rate map[model.SAID][2]float64 // bytes/s, packets/s
}

type sample struct {
	bytes, packets uint64
	at             time.Time
}

func newRates() *rates {
	return &rates{last: map[model.SAID]sample{}, rate: map[model.SAID][2]float64{}}
}

// run samples eng every interval until ctx is done.
func (r *rates) run(ctx context.Context, eng *engine.Engine, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			r.sample(now, eng.ListSAs())
		}
	}
}

func (r *rates) sample(now time.Time, sas []engine.SA) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[model.SAID]bool, len(sas))
	for _, s := range sas {
		seen[s.SAID] = true
		cur := sample{bytes: s.Bytes, packets: s.Packets, at: now}
		if prev, ok := r.last[s.SAID]; ok && now.After(prev.at) && cur.bytes >= prev.bytes {
			dt := now.Sub(prev.at).Seconds()
			r.rate[s.SAID] = [2]float64{float64(cur.bytes-prev.bytes) / dt, float64(cur.packets-prev.packets) / dt}
		}
		r.last[s.SAID] = cur
	}
	for id := range r.last {
		if !seen[id] {
			delete(r.last, id)
			delete(r.rate, id)
		}
	}
}

func (r *rates) of(id model.SAID) (bps, pps float64) {
	if r == nil {
		return 0, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.rate[id]
	return v[0], v[1]
}

// Tunnels lists one row per CHILD_SA: those charon lists over VICI with
// their names, then the SAs no listing names, one row per reqid (the
// newest SA of each direction).
func (v *views) Tunnels() []ctl.Tunnel {
	sas := v.eng.ListSAs()
	children, _ := v.eng.Children()
	in := map[uint32]*engine.SA{}
	out := map[uint32]*engine.SA{}
	for i := range sas {
		if sas[i].Inbound {
			in[sas[i].SPI] = &sas[i]
		} else {
			out[sas[i].SPI] = &sas[i]
		}
	}
	used := map[*engine.SA]bool{}
	var rows []ctl.Tunnel
	for _, c := range children {
		i, o := in[c.SPIIn], out[c.SPIOut]
		if i == nil && o == nil {
			continue // not (or no longer) in the fast path
		}
		row := ctl.Tunnel{Names: ctl.Names(c.Names), State: c.State, Reqid: c.Reqid}
		v.fillTunnel(&row, i, o)
		used[i], used[o] = true, true
		rows = append(rows, row)
	}
	// SAs without names (no VICI, or not listed yet), by reqid
	byReqid := map[uint32][2]*engine.SA{}
	var order []uint32
	for i := range sas { // install order: the newest wins
		s := &sas[i]
		if used[s] {
			continue
		}
		p, ok := byReqid[s.Reqid]
		if !ok {
			order = append(order, s.Reqid)
		}
		if s.Inbound {
			p[0] = s
		} else {
			p[1] = s
		}
		byReqid[s.Reqid] = p
	}
	for _, r := range order {
		p := byReqid[r]
		row := ctl.Tunnel{Reqid: r}
		v.fillTunnel(&row, p[0], p[1])
		rows = append(rows, row)
	}
	slices.SortStableFunc(rows, func(a, b ctl.Tunnel) int {
		if a.Conn != b.Conn {
			if a.Conn < b.Conn {
				return -1
			}
			return 1
		}
		return int(a.ChildID) - int(b.ChildID)
	})
	return rows
}

func (v *views) fillTunnel(row *ctl.Tunnel, in, out *engine.SA) {
	for _, s := range []*engine.SA{in, out} {
		if s == nil {
			continue
		}
		bps, pps := v.rates.of(s.SAID)
		d := ctl.TunnelDir{Bytes: s.Bytes, Packets: s.Packets, BytesPerSec: bps, PacketsPerSec: pps,
			Drops: map[string]uint64{"auth": s.DropAuth, "replay": s.DropReplay, "malformed": s.DropMalformed, "policy": s.DropPolicy}}
		if s.Inbound {
			row.SPIIn, row.In = fmt.Sprintf("0x%08x", s.SPI), d
		} else {
			row.SPIOut, row.Out = fmt.Sprintf("0x%08x", s.SPI), d
		}
		row.Mode, row.Crypto, row.CryptoMode = s.Mode.String(), s.Crypto, s.CryptoMode
		if row.Reqid == 0 {
			row.Reqid = s.Reqid
		}
	}
}

// viciChildren converts a VICI listing into the engine's names.
func viciChildren(cs []vici.Child) []engine.Child {
	out := make([]engine.Child, 0, len(cs))
	for _, c := range cs {
		out = append(out, engine.Child{
			Names: engine.Names{Conn: c.Conn, Child: c.Child, ChildID: c.ChildID, IKEID: c.IKEID,
				RemoteID: c.RemoteID, Remote: c.Remote},
			Reqid: c.Reqid, SPIIn: c.SPIIn, SPIOut: c.SPIOut, State: c.State,
		})
	}
	return out
}

// runVici follows charon over VICI for the names of its SAs, until ctx is
// done. Without a socket configured it says once that names stay empty.
func runVici(ctx context.Context, log *slog.Logger, socket string, eng *engine.Engine) error {
	if socket == "" {
		log.Info("VICI disabled (vici.socket is empty): SAs and policies have no names")
		<-ctx.Done()
		return ctx.Err()
	}
	w := &vici.Watcher{Log: log, Socket: socket, Sink: func(connected bool, cs []vici.Child) {
		eng.SetChildren(connected, viciChildren(cs))
	}}
	return w.Run(ctx)
}
