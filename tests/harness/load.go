package harness

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Acked is an event answered 2xx with duplicate=false.
type Acked struct {
	// ID is the id the daemon answered, Sid the callSid it was posted
	// with, Lead its lead status.
	ID, Sid, Lead string
	// Sinks are the sinks its routes name ([LoadOptions.Sinks]).
	Sinks []string
}

// LoadOptions shape a [Load]. The zero value is 8 clients posting to the
// hook, every third event of a client "interested".
type LoadOptions struct {
	// Clients is how many clients post at once. Zero means 8.
	Clients int
	// Prefix starts every callSid: prefix-client-n. Empty means "load".
	Prefix string
	// Path is appended to each target URL. Empty means /hooks/callkaro.
	Path string
	// Lead chooses the lead status of a client's i-th event. Nil: every
	// third one (by c+i) is "interested", the others "not_interested".
	Lead func(c, i int) string
	// Sinks gives the sinks an event with that lead status is routed to,
	// for [Acked.Sinks]. Nil: none.
	Sinks func(lead string) []string
	// Pause is how long a client waits after a 2xx.
	Pause time.Duration
}

// Load posts distinct CallKaro events from concurrent clients until
// [Load.Finish] and records every event answered 2xx. A request that
// fails (the daemon is down) or is refused is tried again after 10ms with
// the next event, so a load runs on across restarts and outages.
//
// The clients never fail the test themselves: what they find wrong (an
// event posted once answered duplicate=true) is reported on the test's
// goroutine by Finish.
type Load struct {
	t       testing.TB
	o       LoadOptions
	targets atomic.Pointer[[]string]
	stop    chan struct{}
	wg      sync.WaitGroup

	mu         sync.Mutex
	acked      []Acked
	statuses   map[int]int
	connErrors int
	noRetry    int // 503 answers without Retry-After
	lastOK     time.Time
	longestGap time.Duration
	problems   []string
	finished   bool
}

// StartLoad starts a load on the daemons at urls (base URLs; a client
// takes them in turn). The test's cleanup stops it.
func StartLoad(t testing.TB, o LoadOptions, urls ...string) *Load {
	t.Helper()
	if o.Clients <= 0 {
		o.Clients = 8
	}
	if o.Prefix == "" {
		o.Prefix = "load"
	}
	if o.Path == "" {
		o.Path = "/hooks/callkaro"
	}
	if o.Lead == nil {
		o.Lead = func(c, i int) string {
			if (c+i)%3 == 0 {
				return "interested"
			}
			return "not_interested"
		}
	}
	if o.Sinks == nil {
		o.Sinks = func(string) []string { return nil }
	}
	l := &Load{t: t, o: o, stop: make(chan struct{}), statuses: map[int]int{}, lastOK: time.Now()}
	l.SetTargets(urls...)
	for c := range o.Clients {
		l.wg.Go(func() { l.client(c) })
	}
	t.Cleanup(func() { l.Finish() })
	return l
}

func (l *Load) client(c int) {
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		targets := *l.targets.Load()
		url := targets[(c+i)%len(targets)] + l.o.Path
		sid := fmt.Sprintf("%s-%d-%d", l.o.Prefix, c, i)
		lead := l.o.Lead(c, i)
		req, _ := http.NewRequest("POST", url, strings.NewReader(string(CallEvent(sid, lead))))
		req.Header.Set("Content-Type", "application/json")
		code, ans, retryAfter, err := do(req)
		now := time.Now()
		l.mu.Lock()
		switch {
		case err != nil && code == 0:
			l.connErrors++
		case code/100 == 2:
			l.statuses[code]++
			id, _ := ans["id"].(string)
			switch {
			case err != nil || id == "":
				l.problems = append(l.problems, fmt.Sprintf("event %s: answered %d without an id: %v %v", sid, code, ans, err))
			case ans["duplicate"] == true:
				l.problems = append(l.problems, fmt.Sprintf("event %s, posted once, was answered duplicate=true: %v", sid, ans))
			default:
				l.acked = append(l.acked, Acked{ID: id, Sid: sid, Lead: lead, Sinks: l.o.Sinks(lead)})
				l.longestGap = max(l.longestGap, now.Sub(l.lastOK))
				l.lastOK = now
			}
		default:
			l.statuses[code]++
			if code == http.StatusServiceUnavailable && !retryAfter {
				l.noRetry++
			}
		}
		l.mu.Unlock()
		if err != nil || code/100 != 2 {
			time.Sleep(10 * time.Millisecond) // the daemon is down or refusing: keep trying
		} else if l.o.Pause > 0 {
			time.Sleep(l.o.Pause)
		}
	}
}

// do sends req and decodes the JSON answer.
func do(req *http.Request) (code int, ans map[string]any, retryAfter bool, err error) {
	resp, err := Client.Do(req)
	if err != nil {
		return 0, nil, false, err
	}
	defer resp.Body.Close()
	err = decodeJSON(resp.Body, &ans)
	return resp.StatusCode, ans, resp.Header.Get("Retry-After") != "", err
}

// SetTargets changes the daemons the clients post to (a restarted daemon
// listens elsewhere).
func (l *Load) SetTargets(urls ...string) {
	if len(urls) == 0 {
		panic("harness: a load needs at least one URL")
	}
	u := append([]string(nil), urls...)
	l.targets.Store(&u)
}

// Count returns how many events were acknowledged so far.
func (l *Load) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// Snapshot returns the events acknowledged so far.
func (l *Load) Snapshot() []Acked {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Acked(nil), l.acked...)
}

// WaitCount waits until at least n events were acknowledged: a test's
// premise that the load is real.
func (l *Load) WaitCount(t testing.TB, n int, within time.Duration) {
	t.Helper()
	Eventually(t, within, func() error {
		if got := l.Count(); got < n {
			return fmt.Errorf("%d events acknowledged, want at least %d (%s)", got, n, l.Summary())
		}
		return nil
	})
}

// Finish stops the clients, waits for them, reports their problems as
// errors of the test, and returns every acknowledged event. Calling it
// again returns the same events.
func (l *Load) Finish() []Acked {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.mu.Lock()
	report := !l.finished
	l.finished = true
	problems := l.problems
	l.mu.Unlock()
	if report {
		for i, p := range problems {
			if i == 10 {
				l.t.Errorf("load: and %d more problems", len(problems)-i)
				break
			}
			l.t.Errorf("load: %s", p)
		}
	}
	return l.Snapshot()
}

// IDs returns the ids of events.
func IDs(events []Acked) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return ids
}

// LoadStats are the answers a load got.
type LoadStats struct {
	// Statuses counts the answers by status code.
	Statuses map[int]int
	// ConnErrors counts the requests that got no answer.
	ConnErrors int
	// NoRetryAfter counts the 503 answers without a Retry-After header.
	NoRetryAfter int
	// LastOK is when the last event was acknowledged, and LongestGap the
	// longest time between two acknowledgements (or from the start).
	LastOK     time.Time
	LongestGap time.Duration
}

// Stats returns the answers so far.
func (l *Load) Stats() LoadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := LoadStats{Statuses: map[int]int{}, ConnErrors: l.connErrors, NoRetryAfter: l.noRetry, LastOK: l.lastOK, LongestGap: l.longestGap}
	for k, v := range l.statuses {
		st.Statuses[k] = v
	}
	return st
}

// Summary describes the answers in one line: "answers 812×200 3×503, 2
// connection errors".
func (l *Load) Summary() string {
	st := l.Stats()
	var codes []int
	for c := range st.Statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d×%d", st.Statuses[c], c))
	}
	return fmt.Sprintf("answers %s, %d connection errors", strings.Join(parts, " "), st.ConnErrors)
}
