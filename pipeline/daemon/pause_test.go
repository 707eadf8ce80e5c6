package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// TestPausesKeptAcrossLoads checks that a pause written by one daemon is
// read by the next one from the same log dir, and that a resume is too.
func TestPausesKeptAcrossLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // not created yet, as with JetStream
	p, err := loadPauses(dir)
	if err != nil {
		t.Fatalf("loadPauses(empty dir) = %v, want nil", err)
	}
	steps := []struct {
		name        string
		sink        string
		pause       bool
		wantChanged bool
		wantPaused  []string // after a reload from disk
	}{
		{"pause crm", "crm", true, true, []string{"crm"}},
		{"pause crm again", "crm", true, false, []string{"crm"}},
		{"pause slack", "slack", true, true, []string{"crm", "slack"}},
		{"resume crm", "crm", false, true, []string{"slack"}},
		{"resume crm again", "crm", false, false, []string{"slack"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			changed, err := p.set(st.sink, st.pause)
			if err != nil || changed != st.wantChanged {
				t.Fatalf("set(%s, %v) = %v, %v, want %v, nil", st.sink, st.pause, changed, err, st.wantChanged)
			}
			again, err := loadPauses(dir)
			if err != nil {
				t.Fatalf("loadPauses() = %v, want nil", err)
			}
			for _, s := range []string{"crm", "slack"} {
				want := false
				for _, w := range st.wantPaused {
					want = want || w == s
				}
				if got := again.is(s); got != want {
					t.Errorf("after reload: is(%s) = %v, want %v", s, got, want)
				}
			}
		})
	}
}

// TestPausesBadFile checks that an unreadable pause file stops the start
// with a message that says which file and what to do.
func TestPausesBadFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, pauseFileName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadPauses(dir)
	if err == nil || !strings.Contains(err.Error(), pauseFileName) || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("loadPauses(bad file) = %v, want an error naming %s and the fix", err, pauseFileName)
	}
}

// TestPausesReachTheAttachedDispatcher: a pause or resume reaches the
// sink's attached dispatcher, and one attached later (a reload's) starts
// as the file says; pauses and resumes at once leave the two agreeing.
func TestPausesReachTheAttachedDispatcher(t *testing.T) {
	p, err := loadPauses(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	newDisp := func(paused bool) *dispatch.Dispatcher {
		return dispatch.New(dispatch.Options{Sink: "crm", Queue: memlog.New().Queue("crm"), Paused: paused})
	}
	first := p.attach("crm", newDisp)
	if _, err := p.set("crm", true); err != nil {
		t.Fatal(err)
	}
	if !first.Status().Paused {
		t.Error("the attached dispatcher runs after a pause")
	}
	second := p.attach("crm", newDisp) // a reload's
	if !second.Status().Paused {
		t.Error("a dispatcher attached while the sink is paused runs")
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.set("crm", i%2 == 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got, want := second.Status().Paused, p.is("crm"); got != want {
		t.Errorf("after pauses and resumes at once: the dispatcher paused %v, the file %v", got, want)
	}
}
