package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/pipelined/pipelined/pipeline/dispatch"
)

// pauseFileName is the file in [log] dir that keeps the sinks an operator
// paused, so a pause holds across restarts. It lives next to the log, not
// in it: it is this daemon's control state, written rarely, readable and
// removable by hand, and the same for every log backend (with JetStream it
// is local to each daemon: pause the sink on every daemon that shares the
// stream).
const pauseFileName = "paused-sinks.json"

// pauses is the set of paused sinks and the file that keeps it, and the
// dispatcher of each sink that a pause or resume reaches.
type pauses struct {
	path string

	// mu guards paused, disps and the file: a pause is written and
	// applied, and a dispatcher attached, one at a time, so that two
	// calls at once (a pause and a resume, or a pause and a reload that
	// starts a new dispatcher) leave the file and the dispatcher agreeing.
	mu     sync.Mutex
	paused map[string]bool
	disps  map[string]*dispatch.Dispatcher
}

// attach makes the dispatcher newDisp returns, paused as its sink is,
// the one that the sink's pauses and resumes reach. A nil *pauses pauses
// nothing.
func (p *pauses) attach(sink string, newDisp func(paused bool) *dispatch.Dispatcher) *dispatch.Dispatcher {
	if p == nil {
		return newDisp(false)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d := newDisp(p.paused[sink])
	if p.disps == nil {
		p.disps = map[string]*dispatch.Dispatcher{}
	}
	p.disps[sink] = d
	return d
}

// pauseFile is the JSON of the pause file.
type pauseFile struct {
	Paused []string `json:"paused"`
}

// loadPauses reads the pause file of the log directory dir; a missing
// file means no sink is paused.
func loadPauses(dir string) (*pauses, error) {
	p := &pauses{path: filepath.Join(dir, pauseFileName), paused: map[string]bool{}}
	data, err := os.ReadFile(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read paused sinks: %w", err)
	}
	var f pauseFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("read paused sinks: %s: %w (fix it, or remove it to resume every sink)", p.path, err)
	}
	for _, s := range f.Paused {
		p.paused[s] = true
	}
	return p, nil
}

// is reports whether sink is paused. A nil *pauses pauses nothing.
func (p *pauses) is(sink string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused[sink]
}

// set records that sink is paused or not, in the file first (written to a
// temporary file, synced, renamed over the old one), so that a pause the
// operator was told about survives a crash, then applies it to the sink's
// attached dispatcher. It reports whether the state changed.
func (p *pauses) set(sink string, paused bool) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := p.paused[sink] != paused
	if changed {
		next := []string{}
		for s := range p.paused {
			if s != sink {
				next = append(next, s)
			}
		}
		if paused {
			next = append(next, sink)
		}
		slices.Sort(next)
		if err := writeFileSync(p.path, pauseFile{Paused: next}); err != nil {
			return false, fmt.Errorf("keep the pause of sink %s across restarts: %w", sink, err)
		}
		if paused {
			p.paused[sink] = true
		} else {
			delete(p.paused, sink)
		}
	}
	if d := p.disps[sink]; d != nil {
		if paused {
			d.Pause()
		} else {
			d.Resume()
		}
	}
	return changed, nil
}

// writeFileSync writes v as JSON to path, through a temporary file that
// is synced and renamed over the old one, then syncs the directory: the
// file is the old one or the new one, never a part, and the new one
// survives a crash once writeFileSync returns.
func writeFileSync(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
