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
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
)

// nopAppender answers at once, so the benchmarks measure the handler's own
// work per request: checks, JSON decode, dedup key, rules, the answer.
type nopAppender struct{}

func (nopAppender) Append(_ context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	return pipeline.Appended{ID: e.Event.ID}, nil
}

// BenchmarkHandler is one CallKaro request through the handler, without
// the log: everything ingest does on the hot path per event, with the
// daemon's default bounds on requests and bodies in flight.
func BenchmarkHandler(b *testing.B) {
	cfg := testConfig(b)
	cfg.MaxConcurrent, cfg.MaxBodyMemory = 1024, 256<<20
	benchServe(b, ingest.New(cfg, nopAppender{}, nil))
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
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	cfg := testConfig(b)
	cfg.LogRequests = true
	benchServe(b, ingest.New(cfg, nopAppender{}, slog.New(slog.NewJSONHandler(null, nil))))
}

// benchServe posts the CallKaro payload to h b.N times, a new httptest
// request and recorder each time: every handler benchmark's loop.
func benchServe(b *testing.B, h http.Handler) {
	body := callKaro(b)
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

// BenchmarkHandlerHarness is BenchmarkHandler's loop around a handler that
// only reads the body and answers a fixed id: what the benchmark's own
// request, recorder and headers cost, to subtract from BenchmarkHandler's
// figures for the handler's own. (A real server allocates its request and
// response too; the bare handler of bench/bench.sh pays them as well.)
func BenchmarkHandlerHarness(b *testing.B) {
	answer := []byte(`{"id":"019ae3f0-0000-7000-8000-000000000000","duplicate":false}` + "\n")
	var buf [4096]byte
	contentType := []string{"application/json"}
	benchServe(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := r.Body.Read(buf[:]); err != nil {
				break
			}
		}
		w.Header()["Content-Type"] = contentType
		w.WriteHeader(http.StatusOK)
		w.Write(answer)
	}))
}

// BenchmarkHandlerOneRoute is BenchmarkHandler with the routes of the
// reference pipeline.toml: one route, true on the CallKaro payload, to two
// sinks. BenchmarkHandler's config also has a route whose `when` fails on
// every event (len of a number), which costs an error, its redaction and
// its metric per request; this is the common case without it.
func BenchmarkHandlerOneRoute(b *testing.B) {
	cfg := testConfig(b)
	router, err := rules.NewRouter([]rules.Route{
		{Name: "all-calls", When: `body.event == "call_ended"`, To: []string{"archive", "db"}},
	})
	if err != nil {
		b.Fatalf("NewRouter() error = %v", err)
	}
	cfg.Router = router
	benchServe(b, ingest.New(cfg, nopAppender{}, nil))
}

// BenchmarkHandlerMetrics is BenchmarkHandler with the daemon's metrics
// on (a registry of their own): what counting a request, its route
// matches and its rule errors costs on top.
func BenchmarkHandlerMetrics(b *testing.B) {
	cfg := testConfig(b)
	cfg.Metrics = metrics.New(nil)
	benchServe(b, ingest.New(cfg, nopAppender{}, nil))
}
