package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// stallingLog is a real Badger log that stalls on command, as one on a
// disk that stops answering does: once stall is called, Append and Close
// block until release, whatever their ctx says.
type stallingLog struct {
	*badgerlog.DB
	dir      string
	stalled  chan struct{} // closed by stall
	released chan struct{} // closed by release
	entered  chan struct{} // closed when an Append is held
	enterOne sync.Once
	relOne   sync.Once
	closing  atomic.Bool // Close was called
	closed   chan struct{}
}

func newStallingLog(t *testing.T) *stallingLog {
	t.Helper()
	dir := t.TempDir()
	db, err := badgerlog.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := &stallingLog{DB: db, dir: dir, stalled: make(chan struct{}), released: make(chan struct{}), entered: make(chan struct{}), closed: make(chan struct{})}
	// Last, after the daemon's Run has returned: the held calls end and
	// the log closes, as a disk that comes back lets them.
	t.Cleanup(func() { l.release(); <-l.closed })
	return l
}

func (l *stallingLog) stall()   { close(l.stalled) }
func (l *stallingLog) release() { l.relOne.Do(func() { close(l.released) }) }

func (l *stallingLog) hold() {
	select {
	case <-l.stalled:
	default:
		return
	}
	<-l.released
}

func (l *stallingLog) Append(ctx context.Context, es []pipeline.Entry) ([]pipeline.Appended, error) {
	select {
	case <-l.stalled:
		l.enterOne.Do(func() { close(l.entered) })
	default:
	}
	l.hold()
	return l.DB.Append(ctx, es)
}

func (l *stallingLog) Close() error {
	defer close(l.closed)
	l.closing.Store(true)
	l.hold()
	return l.DB.Close()
}

// TestStopGivesUpOnAStalledLog stops a daemon whose Badger log stalls
// while three webhooks wait for their commit: the stop ends about
// shutdown_timeout + the writer's grace + the log's close timeout after
// it began (without the bound it waits for the log for ever); each of the
// three is answered 503 with Retry-After, never 2xx; one line says what
// the stop gave up on and why nothing acknowledged is lost; Run returns
// ErrUncleanStop. The event acknowledged before the stall is in the log
// once the disk comes back.
func TestStopGivesUpOnAStalledLog(t *testing.T) {
	const shutdownTimeout = 500 * time.Millisecond
	timing := stopTiming{grace: 100 * time.Millisecond, every: time.Hour, writerGrace: 300 * time.Millisecond, logClose: 700 * time.Millisecond, pluginStop: 2 * time.Second}
	l := newStallingLog(t)
	var logs testlog.Buffer
	nt := &recordingNotifier{}
	ready := make(chan daemonAddrs, 1)
	d := New(pluginConfig(t, fmt.Sprintf("shutdown_timeout = %q", shutdownTimeout.String())), &Options{
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
		Notifier: nt,
		OnReady:  func(i, a net.Addr) { ready <- daemonAddrs{i.String(), a.String()} },
	})
	d.openLog = func(context.Context, config.Log, *slog.Logger, *atomic.Int64) (pipeline.Log, func() map[string]int64, error) {
		return l, nil, nil
	}
	d.sinks.timing = timing
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	var addr daemonAddrs
	select {
	case addr = <-ready:
	case err := <-ran:
		t.Fatalf("Run() = %v before it was ready", err)
	case <-time.After(20 * time.Second):
		t.Fatal("daemon not ready within 20s")
	}

	post := func() (int, http.Header, string, error) {
		resp, err := http.Post("http://"+addr.ingest+"/hooks/src", "application/json", strings.NewReader(`{"event":"call_ended"}`))
		if err != nil {
			return 0, nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b), nil
	}
	code, _, body, err := post()
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST before the stall = %d %s %v, want 200", code, body, err)
	}
	acked := body

	l.stall()
	type answer struct {
		code       int
		retryAfter string
		body       string
		err        error
	}
	const waiting = 3
	answers := make(chan answer, waiting)
	for range waiting {
		go func() {
			code, h, body, err := post()
			answers <- answer{code, h.Get("Retry-After"), body, err}
		}()
	}
	// The premise: the writer is held in the log's Append, and the three
	// requests wait for their commit.
	select {
	case <-l.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no append reached the stalled log")
	}
	waitUntil(t, "three requests waiting for the writer", func() bool { return d.ingestInFlight.Load() == waiting })

	t0 := time.Now()
	cancel()
	bound := shutdownTimeout + timing.writerGrace + answerWait + timing.logClose
	select {
	case err = <-ran:
	case <-time.After(bound + 20*time.Second):
		t.Fatalf("Run did not return %v after its ctx ended, while the log was stalled (want about %v)", bound+20*time.Second, bound)
	}
	took := time.Since(t0)
	if took > bound+5*time.Second {
		t.Errorf("Run returned %v after its ctx ended, want about %v", took, bound)
	}
	if !errors.Is(err, ErrUncleanStop) {
		t.Errorf("Run() = %v, want ErrUncleanStop", err)
	}
	if !l.closing.Load() {
		t.Errorf("the log's Close was never tried")
	}
	for range waiting {
		select {
		case a := <-answers:
			if a.err != nil || a.code != http.StatusServiceUnavailable || a.retryAfter == "" ||
				!strings.Contains(a.body, "shutting down and its event log did not commit the event in time") {
				t.Errorf("POST while the log stalled = %d (Retry-After %q) %s %v, want 503 with Retry-After saying the log did not commit it", a.code, a.retryAfter, a.body, a.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a request waiting for the stalled log got no answer")
		}
	}

	gave := logs.Lines(t, msgGaveUpWAL)
	if len(gave) != 1 {
		t.Fatalf("%d lines %q, want 1:\n%s", len(gave), msgGaveUpWAL, logs.String())
	}
	if r := gave[0]; r["level"] != "ERROR" || r["gave_up_on"] != "appends,close" || r["requests_answered_503"] != float64(waiting) ||
		r["backend"] != "badger" || r["shutdown_timeout"] != "500ms" || r["log_close_timeout"] != "700ms" {
		t.Errorf("log record %v: want ERROR, gave_up_on appends,close, requests_answered_503 %d, backend badger, the timeouts", r, waiting)
	}
	if got := lines(t, &logs, "shutting down: waiting for the event log to close"); len(got) == 0 {
		t.Errorf("no line saying the stop waits for the log to close:\n%s", logs.String())
	}
	if got := nt.statuses("stopping: waiting for the event log's close ("); len(got) == 0 {
		t.Errorf("no status naming the log's close; sent: %v", nt.sent)
	}

	// The disk comes back: what was acknowledged is there.
	l.release()
	<-l.closed
	db, err := badgerlog.Open(l.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ans struct{ ID string }
	if err := json.Unmarshal([]byte(acked), &ans); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Event(context.Background(), ans.ID); err != nil {
		t.Errorf("the event acknowledged before the stall: %v, want it in the log", err)
	}
}
