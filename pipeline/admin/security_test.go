package admin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// raw makes one call to srv with exactly the headers given (no token
// unless one is among them) and returns its status and body.
func raw(t *testing.T, srv *httptest.Server, method, path, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadsNeedToken: with a token configured, every call under /v1/ and
// /debug/ needs it, reads included (issue 15, item 1); /healthz, /readyz
// and /metrics stay open.
func TestReadsNeedToken(t *testing.T) {
	o := v1Options(fixture(t))
	o.Pprof = true
	o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up 1\n") })
	srv := httptest.NewServer(admin.Handler(o))
	t.Cleanup(srv.Close)
	bearer := map[string]string{"Authorization": "Bearer " + token}
	for _, path := range []string{
		"/v1/events", "/v1/events/ev-1", "/v1/events?rejected=true", "/v1/rejections", "/v1/sinks",
		"/v1/sinks/slack/dlq", "/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap", "/v1/nothing",
	} {
		t.Run(path, func(t *testing.T) {
			// A server of its own: ten wrong tokens from one address
			// would make the next call wait (TestTokenGuessesAreLimited).
			srv := httptest.NewServer(admin.Handler(o))
			defer srv.Close()
			if code, body := raw(t, srv, "GET", path, "", nil); code != http.StatusUnauthorized || strings.Contains(body, "ev-1\"") {
				t.Errorf("GET %s without a token = %d %.80s, want 401 and no data", path, code, body)
			}
			if code, _ := raw(t, srv, "GET", path, "", map[string]string{"Authorization": "Bearer wrong"}); code != http.StatusUnauthorized {
				t.Errorf("GET %s with a wrong token = %d, want 401", path, code)
			}
			want := http.StatusOK
			if path == "/v1/nothing" {
				want = http.StatusNotFound
			}
			if code, body := raw(t, srv, "GET", path, "", bearer); code != want {
				t.Errorf("GET %s with the token = %d %.200s, want %d", path, code, body, want)
			}
		})
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := raw(t, srv, "GET", path, "", nil); code != http.StatusOK {
			t.Errorf("GET %s without a token = %d, want 200 (open)", path, code)
		}
	}
}

// TestNoTokenOffLoopback: without a token and off loopback (the daemon
// leaves AllowUnauthenticated false) reads are refused too.
func TestNoTokenOffLoopback(t *testing.T) {
	o := v1Options(fixture(t))
	o.Token = nil
	srv := httptest.NewServer(admin.Handler(o))
	t.Cleanup(srv.Close)
	if code, body := raw(t, srv, "GET", "/v1/events", "", nil); code != http.StatusForbidden {
		t.Errorf("GET /v1/events without a token configured = %d %.80s, want 403", code, body)
	}
}

// TestPprofOff: the profiler answers only when Options.Pprof is set, even
// to the token.
func TestPprofOff(t *testing.T) {
	srv := httptest.NewServer(admin.Handler(v1Options(fixture(t))))
	t.Cleanup(srv.Close)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := raw(t, srv, "GET", path, "", map[string]string{"Authorization": "Bearer " + token}); code != http.StatusNotFound {
			t.Errorf("GET %s with pprof off = %d, want 404", path, code)
		}
	}
}

// TestCrossSite: a loopback admin without a token (AllowUnauthenticated)
// refuses what a browser page of another site can send: a POST that is
// not JSON, a foreign Origin, a Host that is not this listener (DNS
// rebinding) (issue 15, item 4). The dead letter is still there after.
func TestCrossSite(t *testing.T) {
	l := fixture(t)
	o := v1Options(l)
	o.Token, o.AllowUnauthenticated = nil, true
	srv := httptest.NewServer(admin.Handler(o))
	t.Cleanup(srv.Close)
	drop := `{"ids":["ev-1"]}`
	tests := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		want   int
	}{
		{"text/plain", "POST", "/v1/sinks/slack/dlq/drop", map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"form", "POST", "/v1/sinks/slack/dlq/drop", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"no content type", "POST", "/v1/reload", nil, http.StatusUnsupportedMediaType},
		{"retry-now as text/plain", "POST", "/v1/sinks/archive/retry-now", map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"retry-now without content type", "POST", "/v1/sinks/archive/retry-now", nil, http.StatusUnsupportedMediaType},
		{"retry-now from a foreign origin", "POST", "/v1/sinks/archive/retry-now", map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"retry-now to a rebound host", "POST", "/v1/sinks/archive/retry-now", map[string]string{"Content-Type": "application/json", "Host": "evil.example"}, http.StatusForbidden},
		{"foreign origin", "POST", "/v1/sinks/slack/dlq/drop", map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, http.StatusForbidden},
		{"null origin", "POST", "/v1/replay", map[string]string{"Content-Type": "application/json", "Origin": "null"}, http.StatusForbidden},
		{"foreign origin read", "GET", "/v1/events", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"rebound host", "POST", "/v1/sinks/slack/dlq/drop", map[string]string{"Content-Type": "application/json", "Host": "evil.example"}, http.StatusForbidden},
		{"rebound host read", "GET", "/v1/events", map[string]string{"Host": "evil.example:8081"}, http.StatusForbidden},
		{"localhost", "GET", "/v1/events", map[string]string{"Host": "localhost:8081"}, http.StatusOK},
		{"same origin", "GET", "/v1/events", map[string]string{"Origin": srv.URL}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, body := raw(t, srv, tt.method, tt.path, drop, tt.hdr); code != tt.want {
				t.Errorf("%s %s %v = %d %.120s, want %d", tt.method, tt.path, tt.hdr, code, body, tt.want)
			}
		})
	}
	dls, err := l.Queue("slack").DeadLetters(t.Context(), 0, 10)
	if err != nil || len(dls) != 2 {
		t.Fatalf("dead letters after the refused calls = %d, %v; want ev-1 and ev-3 still there", len(dls), err)
	}
	// The premise: a JSON POST from this machine does drop it.
	if code, body := raw(t, srv, "POST", "/v1/sinks/slack/dlq/drop", drop, map[string]string{"Content-Type": "application/json"}); code != http.StatusOK {
		t.Errorf("POST drop as JSON = %d %s, want 200", code, body)
	}
}

// TestTokenScheme: the Bearer scheme is case-insensitive (RFC 9110), and a
// token that is a prefix or an extension of the right one is refused
// (issue 15, item 15).
func TestTokenScheme(t *testing.T) {
	srv := httptest.NewServer(admin.Handler(v1Options(fixture(t))))
	t.Cleanup(srv.Close)
	tests := []struct {
		auth string
		want int
	}{
		{"Bearer " + token, http.StatusOK},
		{"bearer " + token, http.StatusOK},
		{"BEARER " + token, http.StatusOK},
		{"Bearer  " + token + " ", http.StatusOK},
		{"Bearer " + token[:len(token)-1], http.StatusUnauthorized},
		{"Bearer " + token + "x", http.StatusUnauthorized},
		{"Bearer", http.StatusUnauthorized},
		{"Basic " + token, http.StatusUnauthorized},
		{token, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.auth, func(t *testing.T) {
			if code, _ := raw(t, srv, "GET", "/v1/sinks", "", map[string]string{"Authorization": tt.auth}); code != tt.want {
				t.Errorf("GET /v1/sinks with Authorization %q = %d, want %d", tt.auth, code, tt.want)
			}
		})
	}
}

// TestAfterLastSeq: after=2^64-1 is past every seq: an empty page, not the
// first one again (issue 15, item 15), on each backend (Badger seeks
// after+1).
func TestAfterLastSeq(t *testing.T) {
	logs := map[string]func(t *testing.T) pipeline.Log{
		"memlog": func(t *testing.T) pipeline.Log { return fixture(t) },
		"badgerlog": func(t *testing.T) pipeline.Log {
			db, err := badgerlog.Open(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			fill(t, db)
			return db
		},
	}
	for name, open := range logs {
		t.Run(name, func(t *testing.T) {
			h := admin.Handler(v1Options(open(t)))
			const last = "18446744073709551615"
			if got := into[admin.EventList](t, call(t, h, "GET", "/v1/events?after="+last, "", "")); len(got.Events) != 0 || got.Next != "" {
				t.Errorf("GET /v1/events?after=2^64-1 = %v next %q, want no events", eventIDs(got.Events), got.Next)
			}
			if got := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/slack/dlq?after="+last, "", "")); len(got.DeadLetters) != 0 || got.Next != "" {
				t.Errorf("GET /v1/sinks/slack/dlq?after=2^64-1 = %d dead letters next %q, want none", len(got.DeadLetters), got.Next)
			}
			// The premise: the log has events and dead letters.
			if got := into[admin.DeadLetterList](t, call(t, h, "GET", "/v1/sinks/slack/dlq?after=0", "", "")); len(got.DeadLetters) == 0 {
				t.Errorf("GET /v1/sinks/slack/dlq?after=0 = none, want ev-1 and ev-3")
			}
			if got := into[admin.EventList](t, call(t, h, "GET", "/v1/events", "", "")); len(got.Events) == 0 {
				t.Errorf("GET /v1/events = none, want ev-0..ev-5")
			}
		})
	}
}

// TestGuessesCountedPerClientBehindAProxy: behind a trusted proxy, wrong
// tokens are counted per client (X-Forwarded-For), so a stranger's guesses
// hold back the stranger, not the operator who comes through the same
// proxy; without admin.trusted_proxies they hold back the proxy's address.
func TestGuessesCountedPerClientBehindAProxy(t *testing.T) {
	for _, tt := range []struct {
		name     string
		trusted  []netip.Prefix
		operator int // the operator's answer after the stranger's guesses
	}{
		{"behind a trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, http.StatusOK},
		{"proxy not trusted", nil, http.StatusTooManyRequests},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const token = "s3cret-admin-token"
			srv := httptest.NewServer(admin.Handler(admin.Options{Log: memlog.New(), Token: []byte(token), TrustedProxies: tt.trusted}))
			defer srv.Close()
			get := func(from, tok string) int {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/events", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("X-Forwarded-For", from)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			for range admin.GuessBurst {
				get("203.0.113.9", "guess")
			}
			if code := get("203.0.113.9", "guess"); code != http.StatusTooManyRequests {
				t.Fatalf("premise: the stranger after %d wrong tokens = %d, want 429", admin.GuessBurst, code)
			}
			if code := get("198.51.100.7", token); code != tt.operator {
				t.Errorf("the operator, through the same proxy, with the right token = %d, want %d", code, tt.operator)
			}
		})
	}
}
