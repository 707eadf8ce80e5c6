package ingest_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
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
