package ingest_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// nopAppender answers at once, so the benchmarks measure the handler's own
// work per request: checks, JSON decode, dedup key, rules, the answer.
type nopAppender struct{}

func (nopAppender) Append(_ context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	return pipeline.Appended{ID: e.Event.ID}, nil
}

// BenchmarkHandler is one CallKaro request through the handler, without
// the log: everything ingest does on the hot path per event.
func BenchmarkHandler(b *testing.B) {
	body := callKaro(b)
	h := ingest.New(testConfig(b), nopAppender{}, nil)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkDecodeDedupRoute is the per-event rule work: decode the body
// once, compute the dedup key, evaluate every route.
func BenchmarkDecodeDedupRoute(b *testing.B) {
	body := callKaro(b)
	cfg := testConfig(b)
	src := cfg.Sources[0]
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		doc, err := ingest.Decode(body)
		if err != nil {
			b.Fatal(err)
		}
		env := &rules.Env{Body: doc, Source: src.Name, ID: "id"}
		if _, err := src.DedupKey.String(env); err != nil {
			b.Fatal(err)
		}
		cfg.Router.Route(env)
	}
}

// BenchmarkHandlerLogged is BenchmarkHandler with the per-webhook log line
// on ([server] log_requests = true, the default), written as JSON to
// /dev/null: the formatting and the write(2) an accepted webhook costs.
func BenchmarkHandlerLogged(b *testing.B) {
	body := callKaro(b)
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	cfg := testConfig(b)
	cfg.LogRequests = true
	h := ingest.New(cfg, nopAppender{}, slog.New(slog.NewJSONHandler(null, nil)))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, hookPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
