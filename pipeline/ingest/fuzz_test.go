package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// FuzzHandler posts arbitrary bodies with arbitrary content types. Whatever
// comes in, the handler must not panic, must answer one of its statuses with
// one line of JSON, must store an accepted body byte for byte, and must
// append nothing for a request it rejects.
func FuzzHandler(f *testing.F) {
	ck := callKaro(f)
	seeds := []struct {
		body        string
		contentType string
		chunked     bool
	}{
		{string(ck), "application/json", false},
		{string(ck), "application/json; charset=utf-8", true},
		{string(ck), "text/plain", false},
		{"{}", "application/json", false},
		{"[]", "application/cloudevents+json", false},
		{"null", "application/json", false},
		{"", "application/json", false},
		{"{}x", "application/json", false},
		{strings.Repeat("[", 100) + strings.Repeat("]", 100), "application/json", false},
		{strings.Repeat("[", 10001) + strings.Repeat("]", 10001), "application/json", true},
		{"{\"data\":{\"callSid\":\"\xff\xfe\"}}", "application/json", false},
		{"\"\xc3\x28\"", "application/json", false},
		{`{"data":{"callSid":"\ud800"}}`, "application/json", false},
		{`{"data":{"callSid":"\\\ud83d\ude00\\ud800"}}`, "application/json", false},
		{`{"n": 1e400}`, "application/json", false},
		{`{"data": {"callSid": 123456789012345678901234567890, "call_duration": -1e308}}`, "application/json", false},
		{`{"data": {"callSid": 1e20}}`, "application/json", false},
		{`{"data": {"callSid": "a", "callSid": "b"}}`, "application/json", false},
		{`{"data": {"callSid": true, "post_call": {"lead_status": "interested"}, "from": 5}}`, "application/json", false},
		{"{}", "application/json; =", false},
		{"{}", "", false},
		{string(padded(maxBody + 1)), "application/json", true},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.contentType, s.chunked)
	}

	l := memlog.New()
	w := writer.New(l, nil)
	f.Cleanup(w.Close)
	app := &countingAppender{next: w}
	h := ingest.New(testConfig(f), app, nil)
	archive := l.Queue("archive") // every accepted event is routed there

	f.Fuzz(func(t *testing.T, body []byte, contentType string, chunked bool) {
		ctx := context.Background()
		before, err := archive.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		appendsBefore := app.ok.Load()

		var rd io.Reader = bytes.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd)
		}
		req := httptest.NewRequest(http.MethodPost, hookPath, rd)
		if chunked {
			req.ContentLength = -1
		}
		req.Header["Content-Type"] = []string{contentType}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge,
			http.StatusUnsupportedMediaType, http.StatusServiceUnavailable:
		default:
			t.Fatalf("POST %q (%q) = %d, want 200, 400, 413, 415 or 503", body, contentType, rec.Code)
		}
		out := rec.Body.Bytes()
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", ct)
		}
		if !bytes.HasSuffix(out, []byte("\n")) || bytes.Count(out, []byte("\n")) != 1 || !json.Valid(out) {
			t.Fatalf("response body = %q, want one line of JSON", out)
		}

		after, err := archive.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusOK {
			var e struct{ Error string }
			if err := json.Unmarshal(out, &e); err != nil || e.Error == "" {
				t.Errorf("error body = %q, want {\"error\": \"...\"}", out)
			}
			if after != before || app.ok.Load() != appendsBefore {
				t.Errorf("status %d appended: queue %+v -> %+v, appends %d -> %d", rec.Code, before, after, appendsBefore, app.ok.Load())
			}
			return
		}

		if key, dupped := ingest.DupKey(t, body); dupped {
			t.Fatalf("POST %q = 200, but it has the key %q twice in one object", body, key)
		}
		if !utf8.Valid(body) {
			t.Fatalf("POST %q = 200, but it is not UTF-8", body)
		}
		if why := ingest.NotUTF8(body); why != "" {
			t.Fatalf("POST %q = 200, but %s", body, why) // the decoder's flag missed a lone surrogate
		}
		var res ingest.Response
		if err := json.Unmarshal(out, &res); err != nil || res.ID == "" {
			t.Fatalf("200 body = %q, want {\"id\": \"...\", \"duplicate\": ...}", out)
		}
		ev, err := l.Event(ctx, res.ID)
		if err != nil {
			t.Fatalf("200 %q but Event(%q) error = %v", out, res.ID, err)
		}
		wantReady := before.Ready + 1
		if res.Duplicate {
			wantReady = before.Ready
		} else if !bytes.Equal(ev.Body, body) {
			t.Errorf("Event(%q).Body = %q, want the posted %q", res.ID, ev.Body, body)
		}
		if after.Ready != wantReady {
			t.Errorf("Queue(archive) Ready = %d after a 200 (duplicate %v), want %d", after.Ready, res.Duplicate, wantReady)
		}
	})
}
