package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pipelined/pipelined/pipeline/admin"
)

type response struct {
	code   int
	header http.Header
	body   []byte
}

func do(t testing.TB, h http.Handler, method, path string) response {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

// decodeJSON checks the Content-Type and decodes the body.
func decodeJSON(t testing.TB, r response) map[string]any {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

func sinks(ctx context.Context) ([]admin.SinkStatus, error) {
	return []admin.SinkStatus{
		{Name: "archive", Plugin: "running", PID: 4242, Ready: 3, Retrying: 1, Dead: 2},
		{Name: "slack", Plugin: "backoff", LastError: "plugin exited: exit status 1", Ready: 7},
	}, nil
}

func TestHealthz(t *testing.T) {
	h := admin.Handler(admin.Options{AllowUnauthenticated: true, Ready: func() error { return errors.New("not yet") }, Sinks: sinks})
	for _, method := range []string{"GET", "HEAD"} {
		r := do(t, h, method, "/healthz")
		if r.code != http.StatusOK {
			t.Errorf("%s /healthz = %d, want 200 (even when not ready)", method, r.code)
		}
	}
	r := do(t, h, "GET", "/healthz")
	if got, want := decodeJSON(t, r), map[string]any{"status": "ok"}; !reflect.DeepEqual(got, want) {
		t.Errorf("GET /healthz = %v, want %v", got, want)
	}
}

func TestReadyz(t *testing.T) {
	var ready atomic.Bool
	h := admin.Handler(admin.Options{AllowUnauthenticated: true,
		Ready: func() error {
			if !ready.Load() {
				return errors.New(`sink "slack": plugin did not answer its handshake`)
			}
			return nil
		},
		Sinks: sinks,
	})
	tests := []struct {
		name     string
		ready    bool
		wantCode int
		want     map[string]any
	}{
		{"starting", false, http.StatusServiceUnavailable,
			map[string]any{"status": "not ready", "error": `sink "slack": plugin did not answer its handshake`}},
		{"ready", true, http.StatusOK, map[string]any{"status": "ready"}},
		{"not ready again", false, http.StatusServiceUnavailable,
			map[string]any{"status": "not ready", "error": `sink "slack": plugin did not answer its handshake`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready.Store(tt.ready)
			r := do(t, h, "GET", "/readyz")
			if r.code != tt.wantCode {
				t.Errorf("GET /readyz = %d, want %d", r.code, tt.wantCode)
			}
			if got := decodeJSON(t, r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("GET /readyz = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSinks(t *testing.T) {
	tests := []struct {
		name     string
		sinks    func(context.Context) ([]admin.SinkStatus, error)
		wantCode int
		want     string // JSON
	}{
		{"two sinks", sinks, http.StatusOK, `{"sinks": [
			{"name": "archive", "plugin": "running", "pid": 4242, "ready": 3, "retrying": 1, "dead": 2},
			{"name": "slack", "plugin": "backoff", "last_error": "plugin exited: exit status 1", "ready": 7, "retrying": 0, "dead": 0}]}`},
		{"no sinks", func(context.Context) ([]admin.SinkStatus, error) { return []admin.SinkStatus{}, nil },
			http.StatusOK, `{"sinks": []}`},
		{"error", func(context.Context) ([]admin.SinkStatus, error) { return nil, errors.New("event log is closed") },
			http.StatusInternalServerError, `{"error": "event log is closed"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := admin.Handler(admin.Options{AllowUnauthenticated: true, Ready: func() error { return nil }, Sinks: tt.sinks})
			r := do(t, h, "GET", "/v1/sinks")
			if r.code != tt.wantCode {
				t.Errorf("GET /v1/sinks = %d, want %d", r.code, tt.wantCode)
			}
			var want map[string]any
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if got := decodeJSON(t, r); !reflect.DeepEqual(got, want) {
				t.Errorf("GET /v1/sinks = %s, want %s", r.body, tt.want)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := admin.Handler(admin.Options{AllowUnauthenticated: true, Ready: func() error { return nil }, Sinks: sinks})
	tests := []struct {
		method, path string
	}{
		{"POST", "/healthz"},
		{"POST", "/readyz"},
		{"PUT", "/v1/sinks"},
		{"DELETE", "/v1/sinks"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := do(t, h, tt.method, tt.path)
			if r.code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s = %d, want 405", tt.method, tt.path, r.code)
			}
			allow := strings.Split(r.header.Get("Allow"), ", ")
			sort.Strings(allow)
			if want := []string{"GET", "HEAD"}; !reflect.DeepEqual(allow, want) {
				t.Errorf("%s %s: Allow = %v, want %v", tt.method, tt.path, allow, want)
			}
		})
	}
	if r := do(t, h, "GET", "/v1/nothing"); r.code != http.StatusNotFound {
		t.Errorf("GET /v1/nothing = %d, want 404", r.code)
	}
}

// TestReadyzChecks checks that /readyz answers from ReadyChecks, names the
// first failed check, and lists every check with ?verbose.
func TestReadyzChecks(t *testing.T) {
	var writerOK atomic.Bool
	h := admin.Handler(admin.Options{AllowUnauthenticated: true,
		ReadyChecks: func(context.Context) []admin.ReadyCheck {
			w := admin.ReadyCheck{Name: "writer", OK: writerOK.Load()}
			if !w.OK {
				w.Error = "the writer did not answer a ping within 2s"
			}
			return []admin.ReadyCheck{{Name: "log", OK: true}, {Name: "listeners", OK: true}, w}
		},
		Sinks: sinks,
	})
	tests := []struct {
		name     string
		path     string
		writerOK bool
		wantCode int
		want     map[string]any
	}{
		{"ready", "/readyz", true, http.StatusOK, map[string]any{"status": "ready"}},
		{"ready verbose", "/readyz?verbose", true, http.StatusOK, map[string]any{"status": "ready", "checks": []any{
			map[string]any{"name": "log", "ok": true},
			map[string]any{"name": "listeners", "ok": true},
			map[string]any{"name": "writer", "ok": true},
		}}},
		{"writer stuck", "/readyz", false, http.StatusServiceUnavailable,
			map[string]any{"status": "not ready", "error": "writer: the writer did not answer a ping within 2s"}},
		{"writer stuck verbose", "/readyz?verbose=1", false, http.StatusServiceUnavailable, map[string]any{
			"status": "not ready", "error": "writer: the writer did not answer a ping within 2s", "checks": []any{
				map[string]any{"name": "log", "ok": true},
				map[string]any{"name": "listeners", "ok": true},
				map[string]any{"name": "writer", "ok": false, "error": "the writer did not answer a ping within 2s"},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			writerOK.Store(tt.writerOK)
			r := do(t, h, "GET", tt.path)
			if r.code != tt.wantCode {
				t.Errorf("GET %s = %d, want %d", tt.path, r.code, tt.wantCode)
			}
			if got := decodeJSON(t, r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("GET %s = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}
