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
)

// CrashMargin is added to a checkpointed sequence number when swanpathd did
// not stop cleanly: more packets than one checkpoint interval (1 s) can
// carry at line rate.
const CrashMargin = 1 << 24

// SeqState keeps the outbound sequence numbers of the SAs across restarts
// of swanpathd. When swanpathd restarts, charon's plugin installs the same
// SAs again with the same keys; their sequence numbers must continue above
// every number already sent, or the peer drops the packets as replays and,
// worse, AES-GCM would reuse an IV with the same key.
type SeqState struct {
	path string
	mu   sync.Mutex
	prev map[model.SAID]uint64 // from the file, margin included
}

type seqFile struct {
	Clean bool       `json:"clean"`
	SAs   []seqEntry `json:"sas"`
}

type seqEntry struct {
	Dst  netip.Addr `json:"dst"`
	SPI  uint32     `json:"spi"`
	Mark uint32     `json:"mark,omitempty"`
	Seq  uint64     `json:"seq"`
}

// LoadSeqState reads the state file at path; a missing file is an empty
// state, a damaged one an error (the caller decides).
func LoadSeqState(path string) (*SeqState, error) {
	s := &SeqState{path: path, prev: map[model.SAID]uint64{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("sequence state %s: %w", path, err)
	}
	var f seqFile
	if err := json.Unmarshal(data, &f); err != nil {
		return s, fmt.Errorf("sequence state %s: %w", path, err)
	}
	for _, e := range f.SAs {
		seq := e.Seq
		if !f.Clean {
			seq += CrashMargin
		}
		s.prev[model.SAID{Dst: e.Dst, SPI: e.SPI, Proto: model.ProtoESP, Mark: e.Mark}] = seq
	}
	return s, nil
}

// Resume returns where the outbound SA id continues, if it ran before.
func (s *SeqState) Resume(id model.SAID) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.prev[id]
	return v, ok
}

// Save writes the sequence numbers in use (atomically: temp file, rename).
// clean says the fast path has stopped, so the numbers are exact.
func (s *SeqState) Save(seqs map[model.SAID]uint64, clean bool) error {
	f := seqFile{Clean: clean}
	s.mu.Lock()
	// SAs from before the restart that are not back yet keep their record
	for id, v := range s.prev {
		if _, ok := seqs[id]; !ok {
			f.SAs = append(f.SAs, seqEntry{Dst: id.Dst, SPI: id.SPI, Mark: id.Mark, Seq: v})
		}
	}
	s.mu.Unlock()
	for id, v := range seqs {
		f.SAs = append(f.SAs, seqEntry{Dst: id.Dst, SPI: id.SPI, Mark: id.Mark, Seq: v})
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("sequence state: %w", err)
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("sequence state: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("sequence state: %w", err)
	}
	return nil
}

// Forget drops the record of an SA that was deleted for good.
func (s *SeqState) Forget(id model.SAID) {
	s.mu.Lock()
	delete(s.prev, id)
	s.mu.Unlock()
}
