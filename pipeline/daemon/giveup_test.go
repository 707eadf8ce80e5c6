package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// TestGiveUpsKeptAcrossLoads: what one daemon gave up on is read by the
// next from the same log dir, less what was settled in between (as after
// a crash before the file was written again); the file then names only
// what still waits, so a dead letter retried later is not given up on at
// the start after.
func TestGiveUpsKeptAcrossLoads(t *testing.T) {
	ctx := context.Background()
	l := memlog.New()
	var entries []pipeline.Entry
	for _, id := range []string{"waits", "delivered", "dead"} {
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: id, Source: "src", ReceivedAt: time.Now(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "r"}},
		})
	}
	if _, err := l.Append(ctx, entries); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("crm")
	ds, err := q.Fetch(ctx, 3)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Fetch = %d, %v; want 3", len(ds), err)
	}
	seq := map[string]uint64{}
	for _, d := range ds {
		seq[d.Event.ID] = d.Seq
	}
	if err := q.Settle(ctx, []pipeline.Settlement{
		{Seq: seq["waits"], Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503"},
		{Seq: seq["delivered"], Outcome: pipeline.Ack},
		{Seq: seq["dead"], Outcome: pipeline.Dead, Err: "given up"},
	}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	before := &giveUpStore{path: filepath.Join(dir, giveUpFileName)}
	all := []pipeline.GiveUp{
		{Seq: seq["waits"], ID: "waits", Reason: "wrong tenant"},
		{Seq: seq["delivered"], ID: "delivered"},
		{Seq: seq["dead"], ID: "dead"},
		{Seq: 99, ID: "gone-by-retention"},
	}
	if err := before.keeper("crm")(all); err != nil {
		t.Fatalf("keep = %v", err)
	}
	if err := before.keeper("removed-sink")(all[:1]); err != nil {
		t.Fatalf("keep = %v", err)
	}

	var logs bytes.Buffer
	store, waiting, err := loadGiveUps(ctx, dir, l, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("loadGiveUps = %v", err)
	}
	want := map[string][]pipeline.GiveUp{"crm": all[:1]} // nothing waits for removed-sink
	if !reflect.DeepEqual(waiting, want) {
		t.Errorf("loadGiveUps = %+v, want %+v", waiting, want)
	}
	if !strings.Contains(logs.String(), "sink=crm events=1") {
		t.Errorf("the start's log does not say what it kept:\n%s", logs.String())
	}
	var f giveUpFile
	data, err := os.ReadFile(store.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if wantF := (giveUpFile{Sinks: map[string][]givenUp{"crm": {givenUp(all[0])}}}); !reflect.DeepEqual(f, wantF) {
		t.Errorf("the file after the start = %s, want only the entry that waits", data)
	}

	// A sink's last entry settled: the next start finds none.
	if err := store.keeper("crm")(nil); err != nil {
		t.Fatalf("keep(nil) = %v", err)
	}
	if _, waiting, err := loadGiveUps(ctx, dir, l, slog.New(slog.DiscardHandler)); err != nil || len(waiting) != 0 {
		t.Errorf("loadGiveUps after the last was settled = %v, %v; want none", waiting, err)
	}
}

// TestGiveUpsBadFile: an unreadable give-up file stops the start with a
// message that says which file and what to do; a missing one is none.
func TestGiveUpsBadFile(t *testing.T) {
	dir := t.TempDir()
	if _, waiting, err := loadGiveUps(context.Background(), dir, memlog.New(), slog.New(slog.DiscardHandler)); err != nil || waiting != nil {
		t.Fatalf("loadGiveUps(no file) = %v, %v; want none, nil", waiting, err)
	}
	if err := os.WriteFile(filepath.Join(dir, giveUpFileName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := loadGiveUps(context.Background(), dir, memlog.New(), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), giveUpFileName) || !strings.Contains(err.Error(), "remove it") {
		t.Errorf("loadGiveUps(bad file) = %v, want an error naming %s and the fix", err, giveUpFileName)
	}
}
