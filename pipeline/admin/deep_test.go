package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// TestUnencodableAnswerIs500: an event stored before ingest had a nesting
// limit, 9,999 deep, makes /v1/events fail to encode: the answer says so
// with a status that is not 200, never a 200 with an empty body.
func TestUnencodableAnswerIs500(t *testing.T) {
	l := memlog.New()
	defer l.Close()
	deep := strings.Repeat("[", 9999) + strings.Repeat("]", 9999)
	if !json.Valid([]byte(deep)) {
		t.Fatal("premise: the 9,999-deep body is valid JSON to encoding/json")
	}
	ev := pipeline.Event{ID: "deep", Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(deep), Auth: "none"}
	if _, err := l.Append(context.Background(), []pipeline.Entry{{Event: ev}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.Handler(admin.Options{Log: l, AllowUnauthenticated: true}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Error string }
	if resp.StatusCode == http.StatusOK || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, "encode") {
		t.Errorf("GET /v1/events holding a 9,999-deep body = %d %.200q, want a 500 whose error says the answer could not be encoded", resp.StatusCode, body)
	}
}
