package ingest_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// TestRepeatedHeadersKeepEveryValue: a header sent on several lines (a
// proxy appending its own X-Forwarded-For line, say) is kept, and shown to
// rules, as one value with the lines joined by ", " (RFC 9110, 5.3), not as
// its first line alone; a header of one line is kept as sent.
func TestRepeatedHeadersKeepEveryValue(t *testing.T) {
	ignore, err := rules.CompileBool(`headers["x-tag"] == "a, b"`)
	if err != nil {
		t.Fatal(err)
	}
	app := &recordingAppender{}
	src := ingest.Source{Name: "s", Path: "/hooks/s", Ignore: ignore}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20}, app, nil)
	post := func(tags ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/hooks/s", strings.NewReader(`{"id":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("X-Forwarded-For", "203.0.113.7")
		req.Header.Add("X-Forwarded-For", "10.0.0.2")
		req.Header.Set("X-One", "only")
		for _, tag := range tags {
			req.Header.Add("X-Tag", tag)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := post("a", "c"); rec.Code != http.StatusOK || app.len() != 1 {
		t.Fatalf("POST = %d %s, %d stored; want 200, 1", rec.Code, rec.Body, app.len())
	}
	got := app.entries[0].Event.Headers
	for name, want := range map[string]string{"x-forwarded-for": "203.0.113.7, 10.0.0.2", "x-tag": "a, c", "x-one": "only"} {
		if got[name] != want {
			t.Errorf("stored header %s = %q, want %q (all: %v)", name, got[name], want, got)
		}
	}
	// The rules see the joined value: this one is ignored (acknowledged, not stored).
	if rec := post("a", "b"); rec.Code != http.StatusOK || app.len() != 1 {
		t.Fatalf("POST with X-Tag a and b = %d %s, %d stored; want 200 and still 1 (ignored)", rec.Code, rec.Body, app.len())
	}
}

// TestDedupKeyOfAHeaderNotUTF8: HTTP lets a header value carry bytes over
// 0x7f (Latin-1), which events keep as U+FFFD. The dedup key read from
// such a header (webhook-id, or a dedup_key over headers) was made from
// that text too, so two events whose ids differ only there ("order-M\xfcller"
// and "order-M\xe4ller", each signed) had one key: the second was answered
// duplicate and dropped. The key is now made from the bytes; a header
// that is UTF-8 keeps its key as it was.
func TestDedupKeyOfAHeaderNotUTF8(t *testing.T) {
	dedup, err := rules.CompileValue(`headers["x-id"]`)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []ingest.Source{
		{Name: "expr", Path: "/hooks/s", DedupKey: dedup, DedupWindow: time.Hour},
		{Name: "header", Path: "/hooks/s", DedupHeader: "webhook-id", DedupWindow: time.Hour},
	} {
		t.Run(src.Name, func(t *testing.T) {
			l := memlog.New()
			w := writer.New(l, nil)
			defer w.Close()
			h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20}, w, nil)
			name := "X-Id"
			if src.DedupHeader != "" {
				name = src.DedupHeader
			}
			post := func(id string) (dup bool, key string) {
				t.Helper()
				req := httptest.NewRequest(http.MethodPost, "/hooks/s", strings.NewReader(`{"a":1}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(name, id)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				var res ingest.Response
				if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &res) != nil {
					t.Fatalf("POST with %s %q = %d %s, want 200", name, id, rec.Code, rec.Body)
				}
				return res.Duplicate, res.ID
			}
			for _, id := range []string{"order-M\xfcller", "order-M\xe4ller", "order-M\xe4\xe4ller", "order-M\u00fcller", "order-M\ufffdller"} {
				if dup, _ := post(id); dup {
					t.Errorf("%s %q answered duplicate: another event's key", name, id)
				}
			}
			// The same bytes again are the same event; a UTF-8 id too.
			for _, id := range []string{"order-M\xfcller", "order-M\u00fcller"} {
				if dup, _ := post(id); !dup {
					t.Errorf("%s %q again was not a duplicate", name, id)
				}
			}
			es, _, err := l.Events(t.Context(), pipeline.EventFilter{Limit: 100})
			if err != nil || len(es) != 5 {
				t.Fatalf("Events = %d, %v; want 5", len(es), err)
			}
			for _, e := range es {
				for k, v := range e.Event.Headers {
					if !utf8.ValidString(v) {
						t.Errorf("stored header %s = %q: not UTF-8", k, v)
					}
				}
			}
		})
	}
}
