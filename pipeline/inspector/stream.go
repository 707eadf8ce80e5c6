package inspector

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// maxJobs bounds the replays the UI remembers; past it, the oldest
// finished one is forgotten. maxRunning bounds those that run at once
// (each reads the log a page at a time, and holds that page): more are
// refused with 429 until one finishes.
const (
	maxJobs    = 20
	maxRunning = 4
)

// job is a replay started from the UI.
type job struct {
	ID      int
	Req     admin.ReplayRequest
	Started time.Time

	mu   sync.Mutex
	prog admin.ReplayProgress
	done bool
	err  string
}

// finished reports whether the replay has ended.
func (j *job) finished() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done
}

func (j *job) snapshot() jobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := jobView{ID: j.ID, Req: j.Req, Started: j.Started, Progress: j.prog, Done: j.done, Error: j.err}
	if span := v.Progress.Until.Sub(v.Progress.Since); span > 0 && !v.Progress.At.IsZero() {
		v.Percent = min(100, max(0, int(100*v.Progress.At.Sub(v.Progress.Since)/span)))
	}
	if v.Done && v.Error == "" {
		v.Percent = 100
	}
	return v
}

// jobView is a job as the pages and the progress stream show it.
type jobView struct {
	ID       int                  `json:"id"`
	Req      admin.ReplayRequest  `json:"request"`
	Started  time.Time            `json:"started"`
	Progress admin.ReplayProgress `json:"progress"`
	Percent  int                  `json:"percent"`
	Done     bool                 `json:"done"`
	Error    string               `json:"error,omitempty"`
}

type replayData struct {
	Sinks []string
	Req   admin.ReplayRequest
	Jobs  []jobView
}

func (u *UI) replayPage(w http.ResponseWriter, r *http.Request, s session) {
	d := replayData{Sinks: u.sinkNames(r.Context()), Req: admin.ReplayRequest{Since: "1h"}}
	u.jobsMu.Lock()
	for i := len(u.jobs) - 1; i >= 0; i-- {
		d.Jobs = append(d.Jobs, u.jobs[i].snapshot())
	}
	u.jobsMu.Unlock()
	u.render(w, r, http.StatusOK, "replay", u.pg(s, "replay", "Replay", d))
}

// replayStart starts a replay in the background and redirects to its page.
func (u *UI) replayStart(w http.ResponseWriter, r *http.Request, s session) {
	req := admin.ReplayRequest{Sink: r.PostFormValue("sink"), Since: r.PostFormValue("since"), Until: r.PostFormValue("until"),
		Source: r.PostFormValue("source"), When: r.PostFormValue("when"), AllEvents: r.PostFormValue("all_events") == "1"}
	d := replayData{Sinks: u.sinkNames(r.Context()), Req: req}
	p := u.pg(s, "replay", "Replay", d)
	if !slices.Contains(d.Sinks, req.Sink) {
		p.Error = fmt.Sprintf("Sink %q is not configured.", req.Sink)
		u.render(w, r, http.StatusBadRequest, "replay", p)
		return
	}
	// Check the request before it runs, so that its errors show on the form.
	if err := admin.CheckReplay(req); err != nil {
		p.Error = err.Error()
		u.render(w, r, http.StatusBadRequest, "replay", p)
		return
	}
	u.jobsMu.Lock()
	running := 0
	for _, j := range u.jobs {
		if !j.finished() {
			running++
		}
	}
	if running >= maxRunning {
		u.jobsMu.Unlock()
		p.Error = fmt.Sprintf("%d replays are running, the most at once: start this one when one of them has finished.", running)
		u.render(w, r, http.StatusTooManyRequests, "replay", p)
		return
	}
	if len(u.jobs) >= maxJobs { // one is finished: maxRunning < maxJobs
		i := slices.IndexFunc(u.jobs, (*job).finished)
		u.jobs = slices.Delete(u.jobs, i, i+1)
	}
	u.jobSeq++
	j := &job{ID: u.jobSeq, Req: req, Started: time.Now()}
	u.jobs = append(u.jobs, j)
	u.jobsWG.Add(1)
	u.jobsMu.Unlock()
	u.log.Info("ui replay started", "sink", req.Sink, "since", req.Since, "until", req.Until, "when", req.When, "remote", r.RemoteAddr)
	go func() {
		defer u.jobsWG.Done()
		p, err := admin.Replay(u.jobCtx, u.o.Admin, req, func(p admin.ReplayProgress) {
			j.mu.Lock()
			j.prog = p
			j.mu.Unlock()
		})
		j.mu.Lock()
		j.prog, j.done = p, true
		if err != nil {
			j.err = err.Error()
		}
		j.mu.Unlock()
		u.log.Info("ui replay finished", "sink", req.Sink, "scanned", p.Scanned, "enqueued", p.Enqueued, "err", j.err)
	}()
	http.Redirect(w, r, "/ui/replay/"+strconv.Itoa(j.ID), http.StatusSeeOther)
}

func (u *UI) findJob(w http.ResponseWriter, r *http.Request) (*job, bool) {
	id, _ := strconv.Atoi(r.PathValue("job"))
	u.jobsMu.Lock()
	defer u.jobsMu.Unlock()
	for _, j := range u.jobs {
		if j.ID == id {
			return j, true
		}
	}
	u.fail(w, r, http.StatusNotFound, "No such replay (the UI remembers the last "+strconv.Itoa(maxJobs)+", until the daemon restarts).")
	return nil, false
}

func (u *UI) replayJob(w http.ResponseWriter, r *http.Request, s session) {
	j, ok := u.findJob(w, r)
	if !ok {
		return
	}
	u.render(w, r, http.StatusOK, "replayjob", u.pg(s, "replay", "Replay "+strconv.Itoa(j.ID), j.snapshot()))
}

// sse starts a server-sent event stream; send writes one event (within
// a write deadline of its own: the admin server's write timeout would
// otherwise end the stream).
func sse(w http.ResponseWriter) (send func(event string, v any) error, ok bool) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return func(event string, v any) error {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if event != "" {
			fmt.Fprintf(w, "event: %s\n", event)
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}, true
}

// replayStream sends the job's progress every 250ms until it is done.
func (u *UI) replayStream(w http.ResponseWriter, r *http.Request, s session) {
	j, ok := u.findJob(w, r)
	if !ok {
		return
	}
	release, ok := u.streamSlot(w, r)
	if !ok {
		return
	}
	defer release()
	send, _ := sse(w)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		v := j.snapshot()
		ev := "progress"
		if v.Done {
			ev = "done"
		}
		if send(ev, v) != nil || v.Done {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-u.stop:
			return
		case <-t.C:
		}
	}
}

type tailData struct {
	Source    string
	Sources   []string
	Available bool
}

func (u *UI) tailPage(w http.ResponseWriter, r *http.Request, s session) {
	d := tailData{Source: r.URL.Query().Get("source"), Sources: u.sourceNames(), Available: u.o.Subscribe != nil}
	u.render(w, r, http.StatusOK, "tail", u.pg(s, "tail", "Live tail", d))
}

// tailEvent is one event on the live tail.
type tailEvent struct {
	ID         string    `json:"id"`
	Source     string    `json:"source"`
	ReceivedAt time.Time `json:"received_at"`
	DedupKey   string    `json:"dedup_key,omitempty"`
	Sinks      []string  `json:"sinks"`
	Size       int       `json:"size"`
}

// streamSlot takes one of the maxStreams slots that live tails and replay
// progress streams share, or answers 503 and reports false when none is
// free. The caller calls release when its stream ends.
func (u *UI) streamSlot(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	select {
	case u.streams <- struct{}{}:
		return func() { <-u.streams }, true
	default:
		u.fail(w, r, http.StatusServiceUnavailable, "Too many live streams (tails and replay progress) are open; close one and try again.")
		return nil, false
	}
}

// tailDropped is the live tail's "dropped" event: how many events of the
// tail's source it could not show since it started, because they came
// faster than the stream took them.
type tailDropped struct {
	Dropped uint64 `json:"dropped"`
}

// tailPingEvery is how often a live tail sends a ping: often enough to
// keep the connection through proxies that close an idle one, and to tell
// of drops counted after the last event.
const tailPingEvery = 15 * time.Second

// tailStream sends each event appended from now on (of one source when
// ?source= is set) as an unnamed event, with a ping every 15s to keep the
// connection. Events the stream is too slow for are dropped, never held,
// and counted: after an event, if the count grew, a "dropped" event
// carries the total so far, so the page can say what it did not show
// (clients that only read unnamed events are unaffected).
func (u *UI) tailStream(w http.ResponseWriter, r *http.Request, s session) {
	if u.o.Subscribe == nil {
		u.fail(w, r, http.StatusNotImplemented, "The live tail is not available in this daemon.")
		return
	}
	release, ok := u.streamSlot(w, r)
	if !ok {
		return
	}
	defer release()
	source := r.URL.Query().Get("source")
	sub := u.o.Subscribe(256, source)
	defer sub.Cancel()
	send, _ := sse(w)
	// tellDropped tells the page how many entries the writer could not
	// give this stream, when that grew. It runs after each entry (the
	// writer drops only while the buffer is full, so a drop is nearly
	// always followed by an entry) and on each ping (for the drop counted
	// just after the buffer was emptied).
	var dropped uint64 // the count the page was last told
	tellDropped := func() error {
		n := sub.Dropped()
		if n == dropped {
			return nil
		}
		dropped = n
		return send("dropped", tailDropped{Dropped: n})
	}
	if send("hello", map[string]string{"source": source}) != nil {
		return
	}
	keep := time.NewTicker(u.tailPing)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-u.stop:
			return
		case <-keep.C:
			if send("ping", map[string]string{}) != nil || tellDropped() != nil {
				return
			}
		case n := <-sub.C:
			te := tailEvent{ID: n.ID, Source: n.Source, ReceivedAt: n.ReceivedAt, DedupKey: clip(200, n.DedupKey), Size: n.Size, Sinks: n.Sinks}
			if send("", te) != nil || tellDropped() != nil {
				return
			}
		}
	}
}
