package badgerlog_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// An upgrade must read what an older build wrote (P1 across versions). The
// fixtures under testdata/compat/<short commit>/ are log directories that
// the build of that commit wrote, as tar.gz files:
//
//	clean.tar.gz   the compat scenario, the log closed by Close
//	crash.tar.gz   the same scenario, with Badger as the first part's Close
//	               left it and the second part only in the write-ahead log
//	               (a power loss before a checkpoint): Open replays it
//	kill.tar.gz    the same scenario, copied while the log was open (as
//	               kill -9 leaves it): Badger's memtable WAL holds the second
//	               part too, the write-ahead log replays it again
//
// TestCompatFixtures opens each with today's code and checks what a user
// would see. When a change touches the format (a key, a record's fields,
// the write-ahead log), add a fixture of the new build beside the old
// ones, and keep them all: once the change is committed, from a clean tree
// at that commit,
//
//	go test ./pipeline/eventlog/badgerlog -run TestWriteCompatFixture -compat.write testdata/compat/$(git rev-parse --short HEAD)
//
// An old fixture is never written again: it is what that release left on
// users' disks. The scenario (compatStageA, compatStageB) may grow; what it
// writes today is checked in every fixture, so a new kind of state
// belongs in a check that only fixtures written since look for.

var compatWrite = flag.String("compat.write", "", "write this build's compatibility fixture (clean, crash and kill.tar.gz) into this new directory, testdata/compat/<short commit>")

const compatRoot = "testdata/compat"

// The scenario's fixed values: times are in the past of any run, dedup
// keys and rejections are kept for longer than any fixture will live.
var (
	compatBase = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	compatKeep = 100 * 365 * 24 * time.Hour

	// The events, in log order (seq 1 to 6). The UUIDv7s are of
	// milliseconds a few seconds after compatBase (the time index finds
	// them); crm-1001 is no UUIDv7 (an i/ key finds it).
	compatIDs = []string{
		"01a25060-0600-7c0f-81ab-000000000001",
		"01a25060-0bdc-7c0f-81ab-000000000002",
		"01a25060-11b8-7c0f-81ab-000000000003",
		"crm-1001",
		"01a25060-2928-7c0f-81ab-000000000005",
		"01a25060-2d10-7c0f-81ab-000000000006",
	}

	compatRetry1 = compatBase.Add(1 * time.Minute) // archive's first retry of event 2
	compatRetry2 = compatBase.Add(2 * time.Minute) // its second
	compatNotYet = compatBase.Add(3 * time.Minute) // slack's not-attempted event 1
)

const (
	compatErr503      = "HTTP 503: upstream unavailable"
	compatErr500      = "HTTP 500: internal error"
	compatErr400      = "HTTP 400: invalid payload"
	compatTransform   = `transform: cannot fetch "from" from body.data`
	compatNotAttempt  = "not attempted: a 503 with Retry-After: 120 stopped the batch before it"
	compatSlackPrefix = `{"text":"Interested lead from `
)

// compatEntry is event i (0-based) of the scenario, with its dedup key
// and targets. Never change what it returns: the fixtures hold it.
func compatEntry(i int) pipeline.Entry {
	id := compatIDs[i]
	n := i + 1
	at := compatBase.Add(time.Duration(i) * 1500 * time.Millisecond)
	if id == "crm-1001" {
		return pipeline.Entry{
			Event: pipeline.Event{
				ID: id, Source: "crm", ReceivedAt: at, Auth: "bearer",
				Headers: map[string]string{"content-type": "application/json", "x-request-id": "req-1001"},
				Body:    []byte(`{"lead":{"id":1001,"status":"interested"}}`),
			},
			Targets: []pipeline.Target{{Sink: "archive", Route: "all"}},
		}
	}
	e := pipeline.Entry{
		Event: pipeline.Event{
			ID: id, Source: "callkaro", ReceivedAt: at, Auth: "standard-webhooks",
			Headers: map[string]string{
				"content-type":      "application/json",
				"user-agent":        "CallKaro-Webhooks/2.1",
				"webhook-id":        fmt.Sprintf("msg_%d", n),
				"webhook-timestamp": strconv.FormatInt(at.Unix(), 10),
			},
			Body:        []byte(fmt.Sprintf(`{"event":"call_ended","data":{"callSid":"CA-%d","from":"+9198%08d","post_call":{"lead_status":"interested"}}}`, n, n)),
			TraceParent: fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e47%02d-00f067aa0ba902b7-01", n),
			TraceState:  "pipelined=1",
		},
		DedupKey: fmt.Sprintf("CA-%d", n), DedupWindow: compatKeep,
		Targets: []pipeline.Target{
			{Sink: "archive", Route: "all"},
			{Sink: "slack", Route: "leads", Payload: compatPayload(n)},
		},
	}
	switch n {
	case 3: // the transform failed: a dead letter from the start
		e.Targets[1].Payload, e.Targets[1].Err = nil, compatTransform
	case 6: // slack only, its transform failed; an operator drops it
		e.DedupKey = ""
		e.Targets = []pipeline.Target{{Sink: "slack", Route: "leads", Err: compatTransform}}
	}
	return e
}

func compatPayload(n int) []byte {
	return []byte(fmt.Sprintf(`%s+9198%08d"}`, compatSlackPrefix, n))
}

// compatStageA writes the scenario's first part: events 1 to 4 and a
// rejection; archive takes events 1 to 4, acks 1 (a first-attempt ack),
// retries 2, dead-letters 3 and leaves 4 leased (ready again after Close).
func compatStageA(t *testing.T, l *badgerlog.DB) {
	t.Helper()
	ctx := context.Background()
	compatAppend(t, l, []pipeline.Entry{compatEntry(0), compatEntry(1), compatEntry(2)}, "", "", "")
	compatAppend(t, l, []pipeline.Entry{compatEntry(3)}, "")
	_, err := l.Reject(ctx, pipeline.Rejection{
		Source: "callkaro", ReceivedAt: compatBase.Add(5 * time.Second), Status: 401,
		Reason: "signature mismatch (webhook-signature)", Headers: map[string]string{"content-type": "application/json", "webhook-id": "msg_bad"},
		Body: []byte(`{"event":"call_ended"`), Truncated: true, BodySize: 1400, RemoteAddr: "203.0.113.7:51234",
		Keep: compatKeep,
	})
	if err != nil {
		t.Fatalf("Reject: %v", err)
	}
	compatSettle(t, l, "archive", []uint64{1, 2, 3, 4}, []pipeline.Settlement{
		{Seq: 1, Outcome: pipeline.Ack},
		{Seq: 2, Outcome: pipeline.Retry, RetryAt: compatRetry1, Err: compatErr503},
		{Seq: 3, Outcome: pipeline.Dead, Err: compatErr400},
	})
}

// compatStageB writes the second part: archive's second failed attempt of
// event 2; slack does not attempt event 1 and holds event 2 (order_key);
// event 5 queued for both sinks, a duplicate of event 1 refused, event 6 a
// dead letter of slack that is dropped.
func compatStageB(t *testing.T, l *badgerlog.DB) {
	t.Helper()
	ctx := context.Background()
	compatSettle(t, l, "archive", []uint64{2}, []pipeline.Settlement{
		{Seq: 2, Outcome: pipeline.Retry, RetryAt: compatRetry2, Err: compatErr500},
	})
	compatSettle(t, l, "slack", []uint64{1, 2}, []pipeline.Settlement{
		{Seq: 1, Outcome: pipeline.Retry, NotAttempted: true, RetryAt: compatNotYet, Err: compatNotAttempt},
		{Seq: 2, Outcome: pipeline.Hold},
	})
	dup := compatEntry(0)
	dup.Event.ID = "01a25060-2d11-7c0f-81ab-0000000000ff"
	compatAppend(t, l, []pipeline.Entry{compatEntry(4), dup, compatEntry(5)}, "", compatIDs[0], "")
	if n, err := l.Queue("slack").DropDead(ctx, []uint64{6}); n != 1 || err != nil {
		t.Fatalf("DropDead(slack, 6) = %d, %v; want 1", n, err)
	}
}

// compatAppend appends es and checks each answer: "" for appended, else
// the id of the event it is a duplicate of.
func compatAppend(t *testing.T, l *badgerlog.DB, es []pipeline.Entry, dupOf ...string) {
	t.Helper()
	got, err := l.Append(context.Background(), es)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	for i, a := range got {
		want := pipeline.Appended{ID: es[i].Event.ID}
		if dupOf[i] != "" {
			want = pipeline.Appended{ID: dupOf[i], Duplicate: true}
		}
		if a != want {
			t.Fatalf("Append(%s) = %+v, want %+v", es[i].Event.ID, a, want)
		}
	}
}

// compatSettle fetches sink's entries, checks they are the seqs want, and
// settles them with ss.
func compatSettle(t *testing.T, l *badgerlog.DB, sink string, want []uint64, ss []pipeline.Settlement) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ds, err := l.Queue(sink).Fetch(ctx, len(want))
	if err != nil {
		t.Fatalf("Fetch(%s): %v", sink, err)
	}
	var got []uint64
	for _, d := range ds {
		got = append(got, d.Seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Fetch(%s) = seqs %v, want %v", sink, got, want)
	}
	if err := l.Queue(sink).Settle(ctx, ss); err != nil {
		t.Fatalf("Settle(%s): %v", sink, err)
	}
}

// TestWriteCompatFixture writes this build's fixture, with -compat.write
// only; see the comment at the top of this file.
func TestWriteCompatFixture(t *testing.T) {
	out := *compatWrite
	if out == "" {
		t.Skip("writes a compatibility fixture only with -compat.write DIR")
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("%s exists: a fixture is never written again (users' logs are as that build left them); name a new directory", out)
	}
	dir := t.TempDir()
	l, err := badgerlog.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	compatStageA(t, l)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	crash := t.TempDir()
	copyTree(t, dir, crash)
	if l, err = badgerlog.Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	compatStageB(t, l)
	// The kill: the files as the running process has them, written and
	// not synced (as kill -9 leaves them, the page cache kept): Badger's
	// memtable WAL with the second part in it, the one made ahead, the
	// lock file.
	kill := t.TempDir()
	copyTree(t, dir, kill)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The crash: Badger as the first Close left it, and every segment of
	// the write-ahead log as the second part left it, with the first
	// Close's checkpoint: Open replays the second part's records.
	segs, err := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no write-ahead log segments in %s (%v)", dir, err)
	}
	for _, s := range segs {
		copyFile(t, s, filepath.Join(crash, "wal", filepath.Base(s)))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTarGz(t, dir, filepath.Join(out, "clean.tar.gz"))
	writeTarGz(t, crash, filepath.Join(out, "crash.tar.gz"))
	writeTarGz(t, kill, filepath.Join(out, "kill.tar.gz"))
	// A fixture this build cannot read back is no fixture.
	for _, name := range []string{"clean", "crash", "kill"} {
		t.Run(name, func(t *testing.T) { checkCompat(t, filepath.Join(out, name+".tar.gz"), name != "clean") })
	}
}

// fixtureFile says whether a file of a log directory goes into a fixture:
// not what the write-ahead log makes ahead or on the way (a spare segment
// of zeros, a checkpoint being written). Badger's LOCK is there only in a
// directory copied while the log was open, as kill -9 leaves it.
func fixtureFile(rel string) bool {
	switch base := filepath.Base(rel); {
	case base == "spare", strings.HasSuffix(base, ".tmp"), strings.HasSuffix(base, ".new"):
		return false
	}
	return true
}

// copyTree copies the regular files of src and its subdirectories into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if d.Type().IsRegular() && fixtureFile(rel) {
			copyFile(t, path, filepath.Join(dst, rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeTarGz writes the files of dir that go into a fixture to a tar.gz
// at path, in name order, with fixed times and modes: the same log makes
// the same bytes.
func writeTarGz(t *testing.T, dir, path string) {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.Type().IsRegular() && fixtureFile(rel) {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		hdr := &tar.Header{Name: rel, Mode: 0o600, Size: int64(len(b)), ModTime: compatBase, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// untar extracts the fixture at path into a new directory and returns it.
func untar(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		name := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag != tar.TypeReg || !strings.HasPrefix(name, dir+string(filepath.Separator)) {
			t.Fatalf("%s: unexpected entry %q", path, hdr.Name)
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeSparse(out, tr, hdr.Size); err != nil {
			t.Fatalf("%s: %s: %v", path, hdr.Name, err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCompatFixtures opens every fixture of an earlier build with today's
// code and checks what it holds, and that the log goes on from there.
func TestCompatFixtures(t *testing.T) {
	fixtures, err := filepath.Glob(filepath.Join(compatRoot, "*", "*.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if len(fixtures) == 0 {
		t.Fatalf("no fixtures in %s: the test checks nothing", compatRoot)
	}
	for _, f := range fixtures {
		name := strings.TrimSuffix(filepath.ToSlash(strings.TrimPrefix(f, compatRoot+string(filepath.Separator))), ".tar.gz")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			checkCompat(t, f, !strings.HasPrefix(filepath.Base(f), "clean")) // closed by Close, or not
		})
	}
}

// TestCompatRequeue asks each fixture, as an earlier build left it, to
// requeue each of its events to each sink, one at a time, as a replay does:
// Requeue decides by the delivery records that build wrote (see Requeue),
// so a delivered or dropped entry is queued again and a waiting one
// (ready, leased when the log closed, retrying, held) is skipped, a dead
// letter said dead. The table is the scenario of compatStageA and
// compatStageB (seqs 1–6).
func TestCompatRequeue(t *testing.T) {
	fixtures, err := filepath.Glob(filepath.Join(compatRoot, "*", "*.tar.gz"))
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("fixtures in %s: %v, %v", compatRoot, fixtures, err)
	}
	type want struct {
		n    int
		dead bool
	}
	wants := map[string]map[uint64]want{
		"archive": {1: {1, false}, 2: {0, false}, 3: {0, true}, 4: {0, false}, 5: {0, false}, 6: {1, false}},
		"slack":   {1: {0, false}, 2: {0, false}, 3: {0, true}, 4: {1, false}, 5: {0, false}, 6: {1, false}},
	}
	for _, f := range fixtures {
		t.Run(strings.TrimSuffix(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), ".tar.gz"), func(t *testing.T) {
			t.Parallel()
			l, err := badgerlog.Open(untar(t, f), &badgerlog.Options{Retention: compatKeep})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			for sink, m := range wants {
				for seq := uint64(1); seq <= 6; seq++ {
					rs := []pipeline.Requeue{{Seq: seq, Route: "replay"}}
					n, err := l.Queue(sink).Requeue(context.Background(), rs)
					if err != nil || n != m[seq].n || rs[0].Dead != m[seq].dead {
						t.Errorf("Requeue(%s, seq %d) = %d, dead %v, %v; want %d, dead %v", sink, seq, n, rs[0].Dead, err, m[seq].n, m[seq].dead)
					}
				}
			}
		})
	}
}

// writeSparse writes size bytes of r to f, leaving holes where a block is
// all zeros: a log copied from a running process has Badger's files at
// their mapped size (a 128 MiB value-log file, a 32 MiB memtable WAL),
// mostly never written: they stay holes on the test's disk.
func writeSparse(f *os.File, r io.Reader, size int64) error {
	buf := make([]byte, 64<<10)
	var off int64
	for off < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			return err
		}
		if slices.ContainsFunc(buf[:n], func(b byte) bool { return b != 0 }) {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
		off += int64(n)
	}
	return f.Truncate(size)
}

// checkCompat checks the fixture at path against the scenario: read as it
// was left, then fetched, settled and appended to, then opened again.
// crashed says the fixture's log was not closed by Close.
func checkCompat(t *testing.T, path string, crashed bool) {
	dir := untar(t, path)
	checkReplayPremise(t, dir, crashed)
	// Retention as long as the dedup window: the fixture's events are old,
	// and this test reads them, not retention (retention_test.go does).
	l, err := badgerlog.Open(dir, &badgerlog.Options{Retention: compatKeep})
	if err != nil {
		t.Fatalf("Open(%s) = %v; an upgrade must open the log an earlier build left", path, err)
	}
	defer func() {
		if l != nil {
			l.Close()
		}
	}()
	start := time.Now()
	checkCompatEvents(t, l)
	checkCompatDeliveries(t, l, start)
	checkCompatQueues(t, l)
	checkCompatRejection(t, l)
	checkCompatFetch(t, l)
	checkCompatAppends(t, l)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// What today's build wrote over the old log opens again.
	if l, err = badgerlog.Open(dir, &badgerlog.Options{Retention: compatKeep}); err != nil {
		t.Fatalf("Open after the upgraded build wrote to the log = %v", err)
	}
	evs, _, err := l.Events(context.Background(), pipeline.EventFilter{})
	if err != nil || len(evs) != len(compatIDs)+2 {
		t.Fatalf("Events after reopening = %d events, %v; want %d", len(evs), err, len(compatIDs)+2)
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Errorf("after reopening, event %d (%s) has seq %d, want %d", i, e.Event.ID, e.Seq, i+1)
		}
	}
}

// checkReplayPremise checks that a crash fixture leaves records to replay
// past the write-ahead log's checkpoint, and that a clean one leaves none.
func checkReplayPremise(t *testing.T, dir string, crashed bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "wal", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	from, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("wal/checkpoint: %v", err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	var after int64
	for _, s := range segs {
		n, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(s), ".wal"), 10, 64)
		if err != nil {
			t.Fatalf("segment %s: %v", s, err)
		}
		if fi, err := os.Stat(s); err == nil && n >= from {
			after += fi.Size()
		}
	}
	if crashed && after == 0 {
		t.Fatalf("the crash fixture has nothing in the write-ahead log from its checkpoint (segment %d) on: Open replays nothing", from)
	}
	if !crashed && after != 0 {
		t.Fatalf("the clean fixture has %d bytes in the write-ahead log from its checkpoint (segment %d) on, want 0", after, from)
	}
}

// compatEvents are the scenario's events as the log lists them.
func compatEvents() []pipeline.EventInfo {
	var out []pipeline.EventInfo
	for i := range compatIDs {
		e := compatEntry(i)
		ev := e.Event
		ev.DedupKey = e.DedupKey
		info := pipeline.EventInfo{Event: ev, Seq: uint64(i + 1)}
		for _, tg := range e.Targets {
			info.Sinks = append(info.Sinks, tg.Sink)
		}
		out = append(out, info)
	}
	return out
}

// diffEvent says how got differs from want, "" if it does not.
func diffEvent(got, want pipeline.Event) string {
	var d []string
	if got.ID != want.ID || got.Source != want.Source || got.Auth != want.Auth || got.DedupKey != want.DedupKey {
		d = append(d, fmt.Sprintf("id/source/auth/dedup key %q/%q/%q/%q, want %q/%q/%q/%q", got.ID, got.Source, got.Auth, got.DedupKey, want.ID, want.Source, want.Auth, want.DedupKey))
	}
	if !got.ReceivedAt.Equal(want.ReceivedAt) {
		d = append(d, fmt.Sprintf("received at %v, want %v", got.ReceivedAt, want.ReceivedAt))
	}
	if !maps.Equal(got.Headers, want.Headers) {
		d = append(d, fmt.Sprintf("headers %v, want %v", got.Headers, want.Headers))
	}
	if string(got.Body) != string(want.Body) {
		d = append(d, fmt.Sprintf("body %q, want %q", got.Body, want.Body))
	}
	if got.TraceParent != want.TraceParent || got.TraceState != want.TraceState {
		d = append(d, fmt.Sprintf("trace %q %q, want %q %q", got.TraceParent, got.TraceState, want.TraceParent, want.TraceState))
	}
	return strings.Join(d, "; ")
}

func checkCompatEvents(t *testing.T, l *badgerlog.DB) {
	ctx := context.Background()
	want := compatEvents()
	got, next, err := l.Events(ctx, pipeline.EventFilter{})
	if err != nil || next != "" {
		t.Fatalf("Events = next %q, %v", next, err)
	}
	if len(got) != len(want) {
		t.Fatalf("Events = %d events, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Seq != w.Seq || !slices.Equal(g.Sinks, w.Sinks) {
			t.Errorf("Events[%d] = seq %d sinks %v, want seq %d sinks %v", i, g.Seq, g.Sinks, w.Seq, w.Sinks)
		}
		if d := diffEvent(g.Event, w.Event); d != "" {
			t.Errorf("Events[%d] (%s): %s", i, w.Event.ID, d)
		}
		ev, err := l.Event(ctx, w.Event.ID)
		if err != nil {
			t.Errorf("Event(%s) = %v", w.Event.ID, err)
		} else if d := diffEvent(ev, w.Event); d != "" {
			t.Errorf("Event(%s): %s", w.Event.ID, d)
		}
	}
	for _, c := range []struct {
		f    pipeline.EventFilter
		want []uint64
	}{
		{pipeline.EventFilter{Source: "crm"}, []uint64{4}},
		{pipeline.EventFilter{Sink: "slack"}, []uint64{1, 2, 3, 5, 6}},
		{pipeline.EventFilter{DedupKey: "CA-2"}, []uint64{2}},
		{pipeline.EventFilter{ID: compatIDs[4]}, []uint64{5}},
		{pipeline.EventFilter{Since: compatBase.Add(time.Second), Until: compatBase.Add(4 * time.Second)}, []uint64{2, 3}},
		{pipeline.EventFilter{State: pipeline.StateDead}, []uint64{3}},
		{pipeline.EventFilter{State: pipeline.StateRetrying}, []uint64{2}},
		{pipeline.EventFilter{Sink: "slack", State: pipeline.StateDropped}, []uint64{6}},
		{pipeline.EventFilter{Sink: "archive", State: pipeline.StatePending}, []uint64{2, 4, 5}},
	} {
		evs, _, err := l.Events(ctx, c.f)
		var seqs []uint64
		for _, e := range evs {
			seqs = append(seqs, e.Seq)
		}
		if err != nil || !slices.Equal(seqs, c.want) {
			t.Errorf("Events(%+v) = seqs %v, %v; want %v", c.f, seqs, err, c.want)
		}
	}
	evs, _, err := l.EventsNewestFirst(ctx, pipeline.EventFilter{Limit: 2})
	if err != nil || len(evs) != 2 || evs[0].Seq != 6 || evs[1].Seq != 5 {
		t.Errorf("EventsNewestFirst(limit 2) = %d events, %v; want seqs 6, 5", len(evs), err)
	}
}

// compatRecord is what a delivery record must say; its attempt times are
// checked to lie between the scenario's start and the test's.
type compatRecord struct {
	sink, route, state string
	attempts           int
	lastErr            string
	next               time.Time
	notAttempted       string
	held, dropped      bool
	failures           []string
}

func checkCompatDeliveries(t *testing.T, l *badgerlog.DB, start time.Time) {
	want := map[string][]compatRecord{
		compatIDs[0]: {
			{sink: "archive", route: "all", state: pipeline.StateDelivered, attempts: 1},
			{sink: "slack", route: "leads", state: pipeline.StateQueued, next: compatNotYet, notAttempted: compatNotAttempt},
		},
		compatIDs[1]: {
			{sink: "archive", route: "all", state: pipeline.StateRetrying, attempts: 2, lastErr: compatErr500, next: compatRetry2, failures: []string{compatErr503, compatErr500}},
			{sink: "slack", route: "leads", state: pipeline.StateQueued, held: true},
		},
		compatIDs[2]: {
			{sink: "archive", route: "all", state: pipeline.StateDead, attempts: 1, lastErr: compatErr400, failures: []string{compatErr400}},
			{sink: "slack", route: "leads", state: pipeline.StateDead, lastErr: compatTransform},
		},
		compatIDs[3]: {{sink: "archive", route: "all", state: pipeline.StateQueued}},
		compatIDs[4]: {
			{sink: "archive", route: "all", state: pipeline.StateQueued},
			{sink: "slack", route: "leads", state: pipeline.StateQueued},
		},
		compatIDs[5]: {{sink: "slack", route: "leads", state: pipeline.StateDropped, lastErr: compatTransform, dropped: true}},
	}
	inRange := func(at time.Time) bool { return !at.Before(compatBase) && !at.After(start) }
	for _, id := range compatIDs {
		got, err := l.Deliveries(context.Background(), id)
		if err != nil {
			t.Errorf("Deliveries(%s) = %v", id, err)
			continue
		}
		if len(got) != len(want[id]) {
			t.Errorf("Deliveries(%s) = %d records, want %d", id, len(got), len(want[id]))
			continue
		}
		for i, w := range want[id] {
			g := got[i]
			var errs []string
			for _, f := range g.Failures {
				errs = append(errs, f.Err)
			}
			if g.Sink != w.sink || g.Route != w.route || g.State != w.state || g.Attempts != w.attempts || g.LastError != w.lastErr ||
				!g.NextAttemptAt.Equal(w.next) || g.NotAttemptedReason != w.notAttempted || g.Held != w.held || !slices.Equal(errs, w.failures) {
				t.Errorf("Deliveries(%s)[%d] = %s %s %s attempts %d last error %q next %v not attempted %q held %v failures %q,\n\twant %s %s %s attempts %d last error %q next %v not attempted %q held %v failures %q",
					id, i, g.Sink, g.Route, g.State, g.Attempts, g.LastError, g.NextAttemptAt, g.NotAttemptedReason, g.Held, errs,
					w.sink, w.route, w.state, w.attempts, w.lastErr, w.next, w.notAttempted, w.held, w.failures)
			}
			if attempted := w.attempts > 0; attempted != inRange(g.FirstAttemptAt) || attempted != inRange(g.LastAttemptAt) || g.LastAttemptAt.Before(g.FirstAttemptAt) {
				t.Errorf("Deliveries(%s)[%d]: first attempt %v, last %v; want them between %v and %v after %d attempts", id, i, g.FirstAttemptAt, g.LastAttemptAt, compatBase, start, w.attempts)
			}
			if delivered := w.state == pipeline.StateDelivered; delivered != inRange(g.DeliveredAt) {
				t.Errorf("Deliveries(%s)[%d]: delivered at %v", id, i, g.DeliveredAt)
			}
			if w.dropped != inRange(g.DroppedAt) {
				t.Errorf("Deliveries(%s)[%d]: dropped at %v", id, i, g.DroppedAt)
			}
			for j, f := range g.Failures {
				if f.Attempt != j+1 || !inRange(f.At) {
					t.Errorf("Deliveries(%s)[%d].Failures[%d] = attempt %d at %v, want attempt %d", id, i, j, f.Attempt, f.At, j+1)
				}
			}
		}
	}
}

func checkCompatQueues(t *testing.T, l *badgerlog.DB) {
	ctx := context.Background()
	names, err := l.QueueNames(ctx)
	if err != nil || !slices.Equal(names, []string{"archive", "slack"}) {
		t.Errorf("QueueNames = %v, %v; want [archive slack]", names, err)
	}
	for _, c := range []struct {
		sink    string
		stats   pipeline.QueueStats
		dead    []pipeline.DeadLetter
		waiting map[uint64]pipeline.WaitingState
	}{
		{"archive", pipeline.QueueStats{Ready: 2, Retrying: 1, Dead: 1},
			[]pipeline.DeadLetter{{Seq: 3, Route: "all", Attempts: 1, Err: compatErr400}},
			map[uint64]pipeline.WaitingState{2: pipeline.WaitingRetry, 3: pipeline.WaitingDead}},
		{"slack", pipeline.QueueStats{Ready: 1, Retrying: 2, Dead: 1},
			[]pipeline.DeadLetter{{Seq: 3, Route: "leads", Err: compatTransform}},
			map[uint64]pipeline.WaitingState{1: pipeline.WaitingRetry, 2: pipeline.WaitingHeld, 3: pipeline.WaitingDead}},
	} {
		q := l.Queue(c.sink)
		if st, err := q.Stats(ctx); err != nil || st != c.stats {
			t.Errorf("Stats(%s) = %+v, %v; want %+v", c.sink, st, err, c.stats)
		}
		dls, err := q.DeadLetters(ctx, 0, 10)
		if err != nil || len(dls) != len(c.dead) {
			t.Errorf("DeadLetters(%s) = %d, %v; want %d", c.sink, len(dls), err, len(c.dead))
			continue
		}
		for i, w := range c.dead {
			g := dls[i]
			if g.Seq != w.Seq || g.Route != w.Route || g.Attempts != w.Attempts || g.Err != w.Err || g.Payload != nil || !g.FailedAt.After(compatBase) {
				t.Errorf("DeadLetters(%s)[%d] = seq %d route %s attempts %d err %q payload %q failed at %v, want seq %d route %s attempts %d err %q",
					c.sink, i, g.Seq, g.Route, g.Attempts, g.Err, g.Payload, g.FailedAt, w.Seq, w.Route, w.Attempts, w.Err)
			}
			if d := diffEvent(g.Event, compatEvents()[g.Seq-1].Event); d != "" {
				t.Errorf("DeadLetters(%s)[%d]: %s", c.sink, i, d)
			}
		}
		got := map[uint64]pipeline.WaitingState{}
		err = q.(pipeline.Holder).Waiting(ctx, true, func(w pipeline.Waiting) error {
			got[w.Seq] = w.State
			return nil
		})
		if err != nil || !maps.Equal(got, c.waiting) {
			t.Errorf("Waiting(%s) = %v, %v; want %v", c.sink, got, err, c.waiting)
		}
	}
}

func checkCompatRejection(t *testing.T, l *badgerlog.DB) {
	rs, _, err := l.Rejections(context.Background(), pipeline.RejectionFilter{})
	if err != nil || len(rs) != 1 {
		t.Fatalf("Rejections = %d, %v; want 1", len(rs), err)
	}
	r := rs[0]
	if r.ID == "" || r.Source != "callkaro" || !r.ReceivedAt.Equal(compatBase.Add(5*time.Second)) || r.Status != 401 ||
		r.Reason != "signature mismatch (webhook-signature)" || r.Headers["webhook-id"] != "msg_bad" || len(r.Headers) != 2 ||
		string(r.Body) != `{"event":"call_ended"` || !r.Truncated || r.BodySize != 1400 || r.RemoteAddr != "203.0.113.7:51234" {
		t.Errorf("Rejections()[0] = %+v; want the scenario's 401 (compatStageA)", r)
	}
}

// compatFetch fetches n entries of sink, waiting for them up to 10 s.
func compatFetch(t *testing.T, l *badgerlog.DB, sink string, n int) []pipeline.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []pipeline.Delivery
	for len(out) < n {
		ds, err := l.Queue(sink).Fetch(ctx, n-len(out))
		if err != nil {
			t.Fatalf("Fetch(%s) after %d of %d entries: %v", sink, len(out), n, err)
		}
		out = append(out, ds...)
	}
	return out
}

// checkDeliveries checks that ds are the entries want (seq, attempt, last
// error, payload) with their events, and acks them.
func checkDeliveries(t *testing.T, l *badgerlog.DB, sink string, ds []pipeline.Delivery, want []pipeline.Delivery) {
	t.Helper()
	evs := compatEvents()
	var ss []pipeline.Settlement
	for i, d := range ds {
		w := want[i]
		if d.Seq != w.Seq || d.Route != w.Route || d.Attempt != w.Attempt || d.LastError != w.LastError || string(d.Payload) != string(w.Payload) {
			t.Errorf("Fetch(%s)[%d] = seq %d route %s attempt %d last error %q payload %q, want seq %d route %s attempt %d last error %q payload %q",
				sink, i, d.Seq, d.Route, d.Attempt, d.LastError, d.Payload, w.Seq, w.Route, w.Attempt, w.LastError, w.Payload)
		}
		if d.Seq >= 1 && d.Seq <= uint64(len(evs)) {
			if diff := diffEvent(d.Event, evs[d.Seq-1].Event); diff != "" {
				t.Errorf("Fetch(%s)[%d]: %s", sink, i, diff)
			}
		}
		ss = append(ss, pipeline.Settlement{Seq: d.Seq, Outcome: pipeline.Ack})
	}
	if err := l.Queue(sink).Settle(context.Background(), ss); err != nil {
		t.Fatalf("Settle(%s): %v", sink, err)
	}
}

func checkCompatFetch(t *testing.T, l *badgerlog.DB) {
	ctx := context.Background()
	// archive: the due retry first, with its attempts and error, then the
	// entry leased at the old Close and the one never fetched.
	checkDeliveries(t, l, "archive", compatFetch(t, l, "archive", 3), []pipeline.Delivery{
		{Seq: 2, Route: "all", Attempt: 3, LastError: compatErr500},
		{Seq: 4, Route: "all", Attempt: 1},
		{Seq: 5, Route: "all", Attempt: 1},
	})
	// The dead letter, retried, starts its attempts again and keeps its error.
	if n, err := l.Queue("archive").RetryDead(ctx, []uint64{3}); n != 1 || err != nil {
		t.Fatalf("RetryDead(archive, 3) = %d, %v; want 1", n, err)
	}
	checkDeliveries(t, l, "archive", compatFetch(t, l, "archive", 1), []pipeline.Delivery{
		{Seq: 3, Route: "all", Attempt: 1, LastError: compatErr400},
	})
	// slack: the entry it did not attempt (no attempt counted), the queued
	// one, with the transform's payloads; then the held one once released.
	checkDeliveries(t, l, "slack", compatFetch(t, l, "slack", 2), []pipeline.Delivery{
		{Seq: 1, Route: "leads", Attempt: 1, Payload: compatPayload(1)},
		{Seq: 5, Route: "leads", Attempt: 1, Payload: compatPayload(5)},
	})
	if n, err := l.Queue("slack").(pipeline.Holder).Release(ctx, []uint64{2}); n != 1 || err != nil {
		t.Fatalf("Release(slack, 2) = %d, %v; want 1", n, err)
	}
	checkDeliveries(t, l, "slack", compatFetch(t, l, "slack", 1), []pipeline.Delivery{
		{Seq: 2, Route: "leads", Attempt: 1, Payload: compatPayload(2)},
	})
	for sink, want := range map[string]pipeline.QueueStats{"archive": {}, "slack": {Dead: 1}} {
		if st, err := l.Queue(sink).Stats(ctx); err != nil || st != want {
			t.Errorf("Stats(%s) after delivering all = %+v, %v; want %+v", sink, st, err, want)
		}
	}
	ds, err := l.Deliveries(ctx, compatIDs[1])
	if err != nil || len(ds) != 2 || ds[0].State != pipeline.StateDelivered || ds[0].Attempts != 3 || ds[1].State != pipeline.StateDelivered || ds[1].Attempts != 1 {
		t.Errorf("Deliveries(%s) after delivering = %+v, %v; want delivered at archive's attempt 3 and slack's 1", compatIDs[1], ds, err)
	}
}

// checkCompatAppends appends after the old events: duplicates of their
// dedup keys are refused, and new events take the seqs after theirs.
func checkCompatAppends(t *testing.T, l *badgerlog.DB) {
	ctx := context.Background()
	at := compatBase.Add(time.Hour)
	mk := func(id, source, key string) pipeline.Entry {
		return pipeline.Entry{
			Event:    pipeline.Event{ID: id, Source: source, ReceivedAt: at, Body: []byte(`{"new":true}`)},
			DedupKey: key, DedupWindow: compatKeep,
			Targets: []pipeline.Target{{Sink: "archive", Route: "all"}},
		}
	}
	newID := "01a25060-fb00-7c0f-81ab-000000000007"
	got, err := l.Append(ctx, []pipeline.Entry{
		mk("01a25060-fb00-7c0f-81ab-0000000000a1", "callkaro", "CA-1"), // the first part's key
		mk("01a25060-fb00-7c0f-81ab-0000000000a5", "callkaro", "CA-5"), // the second part's
		mk(newID, "callkaro", "CA-7"),
		mk("crm-1002", "crm", "CA-1"), // another source's keys are its own
	})
	want := []pipeline.Appended{{ID: compatIDs[0], Duplicate: true}, {ID: compatIDs[4], Duplicate: true}, {ID: newID}, {ID: "crm-1002"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Append after the upgrade = %+v, %v; want %+v", got, err, want)
	}
	evs, _, err := l.Events(ctx, pipeline.EventFilter{Since: at})
	if err != nil || len(evs) != 2 || evs[0].Seq != 7 || evs[0].Event.ID != newID || evs[1].Seq != 8 {
		t.Fatalf("Events since the new appends = %+v, %v; want %s at seq 7, crm-1002 at 8", evs, err, newID)
	}
	if ev, err := l.Event(ctx, newID); err != nil || string(ev.Body) != `{"new":true}` {
		t.Errorf("Event(%s) = %q, %v", newID, ev.Body, err)
	}
	ds := compatFetch(t, l, "archive", 2)
	if ds[0].Seq != 7 || ds[0].Event.ID != newID || ds[1].Seq != 8 {
		t.Errorf("Fetch(archive) after the new appends = seqs %d %d, want 7 8", ds[0].Seq, ds[1].Seq)
	}
}
