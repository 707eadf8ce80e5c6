package ingest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/ingest"
)

// TestAllowDuplicateKeysReachesIngest: a source's allow_duplicate_keys, as
// written in the file, decides whether ingest takes a body with a key twice.
func TestAllowDuplicateKeysReachesIngest(t *testing.T) {
	cfg, err := config.Parse("pipeline.toml", []byte(`
[[source]]
name = "strict"
path = "/hooks/strict"
auth = { type = "none" }

[[source]]
name = "lenient"
path = "/hooks/lenient"
auth = { type = "none" }
allow_duplicate_keys = true
`))
	if err != nil {
		t.Fatal(err)
	}
	ic, err := ingest.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := ingest.New(ic, appendAll{}, nil)
	for path, want := range map[string]int{"/hooks/strict": http.StatusBadRequest, "/hooks/lenient": http.StatusOK} {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"a": 1, "a": 2}`))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("POST %s with a key twice = %d %s, want %d", path, rec.Code, rec.Body, want)
		}
	}
}

// appendAll takes every entry.
type appendAll struct{}

func (appendAll) Append(_ context.Context, e pipeline.Entry) (pipeline.Appended, error) {
	return pipeline.Appended{ID: e.Event.ID}, nil
}

// TestDeliveryHeaderReachesIngest: a source's auth, as written in the
// file, names the header its request log lines print as delivery_id.
func TestDeliveryHeaderReachesIngest(t *testing.T) {
	t.Setenv("TEST_DELIVERY_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	cfg, err := config.Parse("pipeline.toml", []byte(`
[[source]]
name = "callkaro"
path = "/hooks/callkaro"
auth = { type = "standard-webhooks", secret_env = "TEST_DELIVERY_SECRET" }

[[source]]
name = "open"
path = "/hooks/open"
auth = { type = "none" }
`))
	if err != nil {
		t.Fatal(err)
	}
	ic, err := ingest.FromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"webhook-id", ""} {
		if got := ic.Sources[i].DeliveryHeader; got != want {
			t.Errorf("source %s: DeliveryHeader = %q, want %q", ic.Sources[i].Name, got, want)
		}
	}
}
