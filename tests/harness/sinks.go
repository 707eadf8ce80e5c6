package harness

import (
	"bufio"
	"compress/gzip"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the sql sink's SQLite files
)

// Eventually calls cond until it returns nil, every 20ms (backing off to
// 200ms), and fails the test with cond's last error when within has
// passed. Tests wait on conditions with it instead of sleeping.
func Eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	if err := WaitFor(within, cond); err != nil {
		t.Fatalf("after %v: %v", within, err)
	}
}

// WaitFor is [Eventually] that returns the last error instead of failing
// the test.
func WaitFor(within time.Duration, cond func() error) error {
	deadline := time.Now().Add(within)
	wait := 20 * time.Millisecond
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(wait*3/2, 200*time.Millisecond)
	}
}

func decodeJSON(r io.Reader, v any) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("answer is not JSON: %q", raw)
	}
	return nil
}

// eachArchived calls f with every line of every archive file (.jsonl and
// .jsonl.gz) under dir that is a JSON record; a torn last line of a file
// being written, and files renamed or removed meanwhile, are left out.
func eachArchived(dir string, f func(line []byte)) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl*"))
	for _, name := range files {
		if strings.HasSuffix(name, ".tmp") {
			continue
		}
		fh, err := os.Open(name)
		if err != nil {
			continue // compressed and removed meanwhile
		}
		var r io.Reader = fh
		if strings.HasSuffix(name, ".gz") {
			gz, err := gzip.NewReader(fh)
			if err != nil {
				fh.Close()
				continue
			}
			r = gz
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			if json.Valid(sc.Bytes()) {
				f(sc.Bytes())
			}
		}
		fh.Close()
	}
}

// Archived returns every record the archive sink wrote under dir, by
// event id.
func Archived(dir string) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	eachArchived(dir, func(line []byte) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil {
			id, _ := rec["id"].(string)
			out[id] = append(out[id], rec)
		}
	})
	return out
}

// ArchivedCount counts the records the archive sink wrote under dir, by
// event id.
func ArchivedCount(dir string) map[string]int {
	out := map[string]int{}
	eachArchived(dir, func(line []byte) {
		var rec struct{ ID string }
		if json.Unmarshal(line, &rec) == nil {
			out[rec.ID]++
		}
	})
	return out
}

// WaitArchived waits until every id in want is in the archive under dir
// and returns the archive's records.
func WaitArchived(t testing.TB, dir string, want []string, within time.Duration) map[string][]map[string]any {
	t.Helper()
	var got map[string][]map[string]any
	Eventually(t, within, func() error {
		got = Archived(dir)
		var missing []string
		for _, id := range want {
			if len(got[id]) == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d acknowledged events never reached %s, e.g. %v", len(missing), len(want), dir, missing[:min(5, len(missing))])
		}
		return nil
	})
	return got
}

// SQLRows counts the rows of table events in the SQLite file at path by
// id (the sql sink inserts with ON CONFLICT DO NOTHING: a redelivery never
// shows as a second row). A file that does not exist yet has none.
func SQLRows(path string) (map[string]int, error) {
	out := map[string]int{}
	if _, err := os.Stat(path); err != nil {
		return out, nil
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return out, err
	}
	defer db.Close()
	rs, err := db.Query(`SELECT id FROM events`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return out, nil
		}
		return out, err
	}
	defer rs.Close()
	for rs.Next() {
		var id string
		if err := rs.Scan(&id); err != nil {
			return out, err
		}
		out[id]++
	}
	return out, rs.Err()
}

// Receiver is an HTTP endpoint for the http sink (or any webhook sink):
// it counts each webhook-id it accepted and records the time of every
// attempt.
type Receiver struct {
	// URL is the server's base URL.
	URL string

	srv      *httptest.Server
	mu       sync.Mutex
	ok       map[string]int
	attempts map[string][]time.Time
	answer   atomic.Pointer[func(id string, body []byte) (int, string)]
}

// NewReceiver starts a receiver that answers 200 until [Receiver.SetAnswer];
// the test's cleanup stops it.
func NewReceiver(t testing.TB) *Receiver {
	r := &Receiver{ok: map[string]int{}, attempts: map[string][]time.Time{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		id := req.Header.Get("webhook-id")
		code, text := 200, ""
		if f := r.answer.Load(); f != nil {
			code, text = (*f)(id, body)
		}
		r.mu.Lock()
		r.attempts[id] = append(r.attempts[id], time.Now())
		if code/100 == 2 {
			r.ok[id]++
		}
		r.mu.Unlock()
		if code/100 != 2 {
			if text == "" {
				text = fmt.Sprintf("test receiver answers %d", code)
			}
			w.WriteHeader(code)
			io.WriteString(w, text)
		}
	}))
	r.URL = r.srv.URL
	t.Cleanup(r.srv.Close)
	return r
}

// SetAnswer makes f choose the status of each request (and the body of a
// status that is not 2xx; empty: a generic one).
func (r *Receiver) SetAnswer(f func(id string, body []byte) (status int, text string)) {
	r.answer.Store(&f)
}

// Answer returns an answer for [Receiver.SetAnswer] that is always status.
func Answer(status int) func(id string, body []byte) (int, string) {
	return func(string, []byte) (int, string) { return status, "" }
}

// Accepted counts the requests answered 2xx by webhook-id.
func (r *Receiver) Accepted() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.ok))
	for k, v := range r.ok {
		out[k] = v
	}
	return out
}

// Attempts returns the times of every request by webhook-id.
func (r *Receiver) Attempts() map[string][]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]time.Time, len(r.attempts))
	for k, v := range r.attempts {
		out[k] = append([]time.Time(nil), v...)
	}
	return out
}
