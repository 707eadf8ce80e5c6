package ingest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/ingest"
)

// TestConcurrentRequestsStayDistinct: what the handler pools or shares
// between requests (the rules' runners, the answer buffers, the decoder's
// stacks, a failing rule's error) and what it no longer copies (decoded
// strings are slices of the request's own body) never mixes two events:
// many requests at once over HTTP, each with its own callSid, caller and,
// for half of them, a value that the failing route's error message holds,
// and then each stored entry (read after every request is done, so after
// every pooled thing was reused many times) is checked against the body
// that was sent: the answer's id, the stored body, the dedup key, the
// transform's payload, and the logged rule error, redacted or not. Run it
// with -race.
func TestConcurrentRequestsStayDistinct(t *testing.T) {
	const workers, each = 8, 40
	app := &recordingAppender{}
	logs := &testlog.Buffer{}
	h := ingest.New(testConfig(t), app, slog.New(slog.NewJSONHandler(logs, nil)))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	type sent struct {
		sid, from string
		quoting   bool // the body holds "float64", which the rule error names
		body      []byte
	}
	ck := callKaro(t) // read here: body runs on the workers, where t.Fatal must not
	body := func(i int) sent {
		s := sent{sid: fmt.Sprintf("sid-%04d-%s", i, bytes.Repeat([]byte{byte('a' + i%26)}, i%7)), from: fmt.Sprintf("9100%08d", i), quoting: i%2 == 1}
		b := bytes.Replace(ck, []byte(callSid), []byte(s.sid), 1) // a copy: bytes.Replace never returns ck
		b = bytes.Replace(b, []byte(`"919876543210"`), []byte(`"`+s.from+`"`), 1)
		if s.quoting {
			b = bytes.Replace(b, []byte(`"outbound"`), []byte(`"float64"`), 1)
		}
		s.body = b
		return s
	}
	var mu sync.Mutex
	byID := map[string]sent{}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				s := body(w*each + j)
				res, err := http.Post(srv.URL+hookPath, "application/json", bytes.NewReader(s.body))
				if err != nil {
					errs <- err
					return
				}
				answer, _ := io.ReadAll(res.Body)
				res.Body.Close()
				var r ingest.Response
				if res.StatusCode != http.StatusOK || json.Unmarshal(answer, &r) != nil || r.ID == "" {
					errs <- fmt.Errorf("POST %s = %d %s", s.sid, res.StatusCode, answer)
					return
				}
				mu.Lock()
				byID[r.ID] = s
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(byID) != workers*each {
		t.Fatalf("%d distinct ids answered, want %d", len(byID), workers*each)
	}

	app.mu.Lock()
	entries := append([]pipeline.Entry(nil), app.entries...)
	app.mu.Unlock()
	if len(entries) != workers*each {
		t.Fatalf("%d entries appended, want %d", len(entries), workers*each)
	}
	for _, e := range entries {
		s, ok := byID[e.Event.ID]
		if !ok {
			t.Errorf("entry %s: no request was answered that id", e.Event.ID)
			continue
		}
		if !bytes.Equal(e.Event.Body, s.body) {
			t.Errorf("entry %s: body is not the one sent with callSid %s", e.Event.ID, s.sid)
		}
		if e.DedupKey != s.sid {
			t.Errorf("entry %s: dedup key %q, want %q", e.Event.ID, e.DedupKey, s.sid)
		}
		var payload string
		for _, tg := range e.Targets {
			if tg.Sink == "slack" {
				payload = string(tg.Payload)
			}
		}
		if want := `{"text":"Interested lead from ` + s.from + `"}`; payload != want {
			t.Errorf("entry %s: slack payload %s, want %s", e.Event.ID, payload, want)
		}
	}

	// One "rule failed" line per event, its error redacted by that
	// event's own values.
	lines := logs.Lines(t, "rule failed")
	if len(lines) != workers*each {
		t.Fatalf("%d rule failed lines, want %d", len(lines), workers*each)
	}
	for _, l := range lines {
		id, _ := l["event_id"].(string)
		s, ok := byID[id]
		if !ok {
			t.Errorf("rule failed line for unknown event %q", id)
			continue
		}
		want := "route broken when: invalid argument for len (type float64) (1:1)"
		if s.quoting {
			want = "route broken when: invalid argument for len (type …) (1:1)"
		}
		if got := l["err"]; got != want {
			t.Errorf("event %s (quoting %v): err %q, want %q", id, s.quoting, got, want)
		}
	}
}
