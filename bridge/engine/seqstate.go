package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/swanpath/swanpath/bridge/model"
	"github.com/swanpath/swanpath/internal/rundir"
)

// CrashMargin is added to a checkpointed sequence number when swanpathd did
// not stop cleanly: more packets than one checkpoint interval (1 s) can
// carry at line rate.
const CrashMargin = 1 << 24

// SeqState keeps the sequence numbers of the SAs across restarts of
// swanpathd. When swanpathd restarts, charon's plugin installs the same
// SAs again with the same keys. Outbound, their sequence numbers must
// continue above every number already sent, or the peer drops the packets
// as replays and, worse, AES-GCM would reuse an IV with the same key.
// Inbound, every number already received must stay a replay.
//
// The file says whether the fast path had stopped when it was written
// (clean: the numbers are exact). From start to stop it says not clean,
// so that a crash at any moment adds CrashMargin to the outbound numbers
// (MarkRunning). It also knows, per outbound SA, where the SA would
// resume if swanpathd crashed now (CrashResume): an SA must never reach
// it, or a crash would make it send the same numbers again.
type SeqState struct {
	path string
	mu   sync.Mutex
	// from the file, for SAs that come back: outbound where they resume
	// (margin included), inbound the highest number received
	prev, prevIn map[model.SAID]uint64
	crashed      bool                  // the file is not from a clean stop
	onDisk       map[model.SAID]uint64 // see CrashResume
}

type seqFile struct {
	Clean bool       `json:"clean"`
	SAs   []seqEntry `json:"sas"`
}

type seqEntry struct {
	Dst     netip.Addr `json:"dst"`
	SPI     uint32     `json:"spi"`
	Mark    uint32     `json:"mark,omitempty"`
	Inbound bool       `json:"in,omitempty"` // Seq: the highest number received
	Seq     uint64     `json:"seq"`
}

func (e seqEntry) id() model.SAID {
	return model.SAID{Dst: e.Dst, SPI: e.SPI, Proto: model.ProtoESP, Mark: e.Mark}
}

// Seqs are the sequence numbers of the installed SAs: outbound the first
// unused, inbound the highest received.
type Seqs struct {
	Out, In map[model.SAID]uint64
}

// LoadSeqState reads the state file at path. A missing file is an empty
// state. A damaged or unreadable one is an empty state too, with an error
// to log: the SAs charon replays then have no record (see Engine.AddSA).
func LoadSeqState(path string) (*SeqState, error) {
	s := &SeqState{path: path, prev: map[model.SAID]uint64{}, prevIn: map[model.SAID]uint64{},
		onDisk: map[model.SAID]uint64{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		s.crashed = true
		return s, fmt.Errorf("sequence state %s: %w", path, err)
	}
	var f seqFile
	if err := json.Unmarshal(data, &f); err != nil {
		s.crashed = true
		return s, fmt.Errorf("sequence state %s: %w", path, err)
	}
	s.crashed = !f.Clean
	for _, e := range f.SAs {
		if e.Inbound {
			s.prevIn[e.id()] = e.Seq
			continue
		}
		seq := e.Seq
		if !f.Clean {
			seq += CrashMargin
		}
		s.prev[e.id()] = seq
		s.onDisk[e.id()] = seq
	}
	return s, nil
}

// Crashed says whether the file was not written by a clean stop (or could
// not be read): inbound SAs may have received more than it says.
func (s *SeqState) Crashed() bool { return s.crashed }

// Resume returns where the outbound SA id continues, if it ran before.
func (s *SeqState) Resume(id model.SAID) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.prev[id]
	return v, ok
}

// ResumeIn returns the highest sequence number the inbound SA id received
// before, if it ran before.
func (s *SeqState) ResumeIn(id model.SAID) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.prevIn[id]
	return v, ok
}

// CrashResume returns where the outbound SA id would resume if swanpathd
// crashed now, by the file on disk: its number there, plus CrashMargin
// unless the file says clean. Without a record it would come back blocked.
func (s *SeqState) CrashResume(id model.SAID) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.onDisk[id]
	return v, ok
}

// MarkRunning rewrites the file as not clean, the numbers kept, so that a
// crash from now on adds CrashMargin. Call it before the fast path
// forwards: the numbers of a clean stop are exact and would otherwise be
// used again by a crash before the first checkpoint.
func (s *SeqState) MarkRunning() error {
	return s.Save(Seqs{}, false)
}

// Save writes the sequence numbers in use (atomically: temp file, rename).
// clean says the fast path has stopped, so the numbers are exact.
func (s *SeqState) Save(seqs Seqs, clean bool) error {
	f := seqFile{Clean: clean}
	s.mu.Lock()
	// SAs from before the restart that are not back yet keep their record
	for id, v := range s.prev {
		if _, ok := seqs.Out[id]; !ok {
			f.SAs = append(f.SAs, seqEntry{Dst: id.Dst, SPI: id.SPI, Mark: id.Mark, Seq: v})
		}
	}
	for id, v := range s.prevIn {
		if _, ok := seqs.In[id]; !ok {
			f.SAs = append(f.SAs, seqEntry{Dst: id.Dst, SPI: id.SPI, Mark: id.Mark, Inbound: true, Seq: v})
		}
	}
	s.mu.Unlock()
	for id, v := range seqs.Out {
		f.SAs = append(f.SAs, seqEntry{Dst: id.Dst, SPI: id.SPI, Mark: id.Mark, Seq: v})
	}
	for id, v := range seqs.In {
		f.SAs = append(f.SAs, seqEntry{Dst: id.Dst, SPI: id.SPI, Mark: id.Mark, Inbound: true, Seq: v})
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := s.write(data); err != nil {
		return fmt.Errorf("sequence state %s: %w", s.path, err)
	}
	onDisk := make(map[model.SAID]uint64, len(f.SAs))
	for _, e := range f.SAs {
		if !e.Inbound {
			onDisk[e.id()] = e.Seq
			if !clean {
				onDisk[e.id()] += CrashMargin
			}
		}
	}
	s.mu.Lock()
	s.onDisk = onDisk
	s.mu.Unlock()
	return nil
}

func (s *SeqState) write(data []byte) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	// synced before the rename (a crash must not leave an empty file),
	// never through a symlink at the file or its temporary
	return rundir.WriteFile(s.path, data, 0o600)
}

// Forget drops the record of an SA that was deleted for good.
func (s *SeqState) Forget(id model.SAID) {
	s.mu.Lock()
	delete(s.prev, id)
	delete(s.prevIn, id)
	delete(s.onDisk, id)
	s.mu.Unlock()
}
