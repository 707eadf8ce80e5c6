package ingest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/ingest"
)

// TestDecodeCostIsTheConfigs: the config checks max_body_memory against
// max_body with the same factor as ingest charges.
func TestDecodeCostIsTheConfigs(t *testing.T) {
	if ingest.DecodeCost != config.DecodeCost {
		t.Errorf("ingest.DecodeCost = %d, config.DecodeCost = %d: keep them equal", ingest.DecodeCost, config.DecodeCost)
	}
}

// holdingAppender holds the append of a body that starts with held until
// release is closed; others it appends at once.
type holdingAppender struct {
	held    string
	arrived chan struct{}
	release chan struct{}
}

func (a *holdingAppender) Append(ctx context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	if strings.HasPrefix(string(e.Event.Body), a.held) {
		a.arrived <- struct{}{}
		<-a.release
	}
	return pipeline.Appended{ID: e.Event.ID}, nil
}

// TestBodyMemoryBound: bodies in flight count ingest.DecodeCost times
// their length against MaxBodyMemory; one that would go over it is answered
// 503 with Retry-After, saying why, while a small one still passes; once
// the first is answered, its share is free again.
func TestBodyMemoryBound(t *testing.T) {
	const size = 10_000 // counts 800,000 bytes: one fits in 1 MiB, two do not
	app := &holdingAppender{held: `{"hold"`, arrived: make(chan struct{}), release: make(chan struct{})}
	h := ingest.New(ingest.Config{
		Sources:       []ingest.Source{{Name: "open", Path: "/hooks/open"}},
		MaxBody:       1 << 20,
		MaxBodyMemory: 1 << 20,
	}, app, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := func(prefix string) string { // a JSON object of size bytes
		return prefix + `:"` + strings.Repeat("x", size-len(prefix)-4) + `"}`
	}
	post := func(b string) (int, string, string) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/hooks/open", "application/json", strings.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), string(text)
	}

	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(srv.URL+"/hooks/open", "application/json", strings.NewReader(body(`{"hold"`)))
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	select {
	case <-app.arrived: // the first holds its share, in its append
	case <-time.After(10 * time.Second):
		t.Fatal("the first request did not reach its append")
	}
	if code, retry, text := post(body(`{"second"`)); code != http.StatusServiceUnavailable || retry == "" || !strings.Contains(text, "too many large bodies in flight") {
		t.Errorf("a second large body = %d (Retry-After %q) %s, want 503 with Retry-After, too many large bodies", code, retry, text)
	}
	if code, _, text := post(`{"small":1}`); code != http.StatusOK {
		t.Errorf("a small body beside it = %d %s, want 200", code, text)
	}
	// A reload with the same bounds: the first still holds its share.
	h.Swap(ingest.Config{Sources: []ingest.Source{{Name: "open", Path: "/hooks/open"}}, MaxBody: 1 << 20, MaxBodyMemory: 1 << 20})
	if code, _, text := post(body(`{"after swap"`)); code != http.StatusServiceUnavailable {
		t.Errorf("a second large body after a reload, the first still in flight = %d %s, want 503", code, text)
	}
	close(app.release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first request = %d, want 200", code)
	}
	if code, _, text := post(body(`{"third"`)); code != http.StatusOK {
		t.Errorf("a large body once the first is answered = %d %s, want 200", code, text)
	}
}
