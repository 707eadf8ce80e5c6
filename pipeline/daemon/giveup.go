package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
)

// giveUpFileName is the file in [log] dir that keeps the events an
// operator gave up on (pipelined dlq add) until each is settled, so that a
// give-up holds across restarts, as a pause does. The JetStream backend
// offers no give-ups, and so has no such file.
const giveUpFileName = "given-up.json"

// giveUpFile is the JSON of the give-up file.
type giveUpFile struct {
	// Sinks are the entries given up on, by sink, in seq order.
	Sinks map[string][]givenUp `json:"sinks"`
}

// givenUp is one entry of the give-up file.
type givenUp struct {
	Seq    uint64 `json:"seq"`
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// giveUpStore keeps the give-ups of every sink in the give-up file.
type giveUpStore struct {
	path  string
	mu    sync.Mutex // guards sinks and the file
	sinks map[string][]pipeline.GiveUp
}

// keeper returns the dispatch.GiveUps.Keep of sink: it writes the file
// with sink's entries replaced by gs.
func (s *giveUpStore) keeper(sink string) func(gs []pipeline.GiveUp) error {
	return func(gs []pipeline.GiveUp) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		next := maps.Clone(s.sinks)
		if next == nil {
			next = map[string][]pipeline.GiveUp{}
		}
		if len(gs) == 0 {
			delete(next, sink)
		} else {
			next[sink] = gs
		}
		if err := s.write(next); err != nil {
			return fmt.Errorf("keep the events given up on in sink %s across restarts: %w", sink, err)
		}
		return nil
	}
}

// write writes the file with sinks, then keeps sinks as the store's;
// s.mu is held, or s is not shared yet.
func (s *giveUpStore) write(sinks map[string][]pipeline.GiveUp) error {
	f := giveUpFile{Sinks: map[string][]givenUp{}}
	for name, gs := range sinks {
		for _, g := range gs {
			f.Sinks[name] = append(f.Sinks[name], givenUp(g))
		}
	}
	if err := writeFileSync(s.path, f); err != nil {
		return err
	}
	s.sinks = sinks
	return nil
}

// loadGiveUps reads the give-up file of the log directory dir (a missing
// file means none), and returns the store that keeps it with, by sink, the
// entries still waiting in their queue of db. The others were settled
// before the file was written again (a crash in between, or a failed
// write): they are left out, so that none gives up on its event's next
// life in the queue. An entry whose state cannot be read is kept.
func loadGiveUps(ctx context.Context, dir string, db pipeline.Log, log *slog.Logger) (*giveUpStore, map[string][]pipeline.GiveUp, error) {
	s := &giveUpStore{path: filepath.Join(dir, giveUpFileName)}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the events given up on: %w", err)
	}
	var f giveUpFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, nil, fmt.Errorf("read the events given up on: %s: %w (fix it, or remove it: the events it names are then delivered as if never given up on)", s.path, err)
	}
	dl, _ := db.(pipeline.DeliveryLog)
	waiting := map[string][]pipeline.GiveUp{}
	for _, sink := range slices.Sorted(maps.Keys(f.Sinks)) {
		for _, e := range f.Sinks[sink] {
			g := pipeline.GiveUp(e)
			ok := false
			if dl != nil {
				if ok, err = admin.WaitingIn(ctx, dl, sink, g.ID); err != nil {
					log.Warn("cannot tell whether an event given up on still waits; kept", "sink", sink, "event_id", g.ID, "err", err)
					ok = true
				}
			}
			if ok {
				waiting[sink] = append(waiting[sink], g)
			}
		}
		if n := len(waiting[sink]); n > 0 {
			log.Info("events given up on before the restart go to the dead-letter queue at their turn", "sink", sink, "events", n)
		}
	}
	// The file now names what waits, and nothing settled: a dead letter
	// of it retried later must not be given up on at the next start.
	if err := s.write(waiting); err != nil {
		return nil, nil, fmt.Errorf("write the events given up on that still wait: %w", err)
	}
	return s, waiting, nil
}

// restoreGiveUps reads the give-up file of the log directory dir, gives up
// again on the entries it names that still wait, and keeps every later
// give-up in it. Run calls it before the sinks start.
func (s *sinks) restoreGiveUps(ctx context.Context, dir string) error {
	store, waiting, err := loadGiveUps(ctx, dir, s.db, s.log)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.giveUpStore = store
	s.mu.Unlock()
	for sink, gs := range waiting {
		if err := s.giveUpsOf(sink).Add(gs); err != nil {
			return err
		}
	}
	return nil
}
