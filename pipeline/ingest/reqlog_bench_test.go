package ingest

import (
	"log/slog"
	"net/http"
	"os"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
)

// BenchmarkLogAccepted is the per-webhook line of an accepted event alone:
// slog's JSON handler writing to /dev/null (one write(2) per line).
func BenchmarkLogAccepted(b *testing.B) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	h := &Handler{log: slog.New(slog.NewJSONHandler(null, nil))}
	st := &state{cfg: Config{LogRequests: true}}
	e := &pipeline.Entry{DedupKey: "2303fa770b666a64ab1694c1e", Targets: []pipeline.Target{{Sink: "archive"}, {Sink: "db"}, {Sink: "slack"}}}
	res := pipeline.Appended{ID: "01934f4e-9a3b-7c1d-8e2f-0a1b2c3d4e5f"}
	src := &Source{Name: "callkaro", DeliveryHeader: "webhook-id"}
	req := &http.Request{RemoteAddr: "203.0.113.7:41234"}
	e.Event.Headers = map[string]string{"webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"}
	b.ReportAllocs()
	for b.Loop() {
		h.logAccepted(st, src, e, res, req)
	}
}
