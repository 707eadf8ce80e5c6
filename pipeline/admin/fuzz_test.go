package admin_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// FuzzGuard sends arbitrary methods, paths, queries and Authorization,
// Host, Origin and Content-Type headers to the admin API (issue 15). It
// must never panic, and nothing under /v1/ or /debug/ answers 2xx without
// the token, to a foreign Host or Origin, or to a POST that is not JSON.
func FuzzGuard(f *testing.F) {
	f.Add("GET", "/v1/events?after=18446744073709551615&limit=1", "Bearer "+token, "127.0.0.1:8081", "", "")
	f.Add("GET", "/v1/sinks/slack/dlq?after=-1", "bearer "+token, "localhost", "http://localhost", "")
	f.Add("POST", "/v1/sinks/slack/dlq/drop", "", "evil.example", "http://evil.example", "text/plain")
	f.Add("POST", "/v1/reload", "BEARER "+token, "[::1]:8081", "null", "application/json; charset=utf-8")
	f.Add("GET", "/debug/pprof/heap", "Bearer", "127.0.0.1", "", "")
	f.Add("GET", "/v1/events?when=body.n%20%3E%201", "Basic "+token, "127.0.0.2", "", "")
	h := admin.Handler(v1Options(fixture(f)))
	f.Fuzz(func(t *testing.T, method, target, authorization, host, origin, contentType string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		req, err := http.NewRequest(method, "http://127.0.0.1:8081"+target, strings.NewReader(`{"ids":["ev-1"]}`))
		if err != nil {
			return
		}
		req.Host = host
		for k, v := range map[string]string{"Authorization": authorization, "Origin": origin, "Content-Type": contentType} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code/100 != 2 || !strings.HasPrefix(req.URL.Path, "/v1/") && !strings.HasPrefix(req.URL.Path, "/debug/") {
			return
		}
		scheme, tok, _ := strings.Cut(strings.TrimSpace(authorization), " ")
		if !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) != token {
			t.Errorf("%s %s with Authorization %q = %d, want a refusal without the token", method, target, authorization, rec.Code)
		}
		hn := strings.ToLower(strings.Trim(strings.Split(strings.TrimPrefix(host, "["), "]")[0], "."))
		if h, _, ok := strings.Cut(hn, ":"); ok && !strings.Contains(hn, "::") {
			hn = h
		}
		if hn != "localhost" && !strings.HasPrefix(hn, "127.") && hn != "::1" {
			t.Errorf("%s %s with Host %q = %d, want 403 (not this listener)", method, target, host, rec.Code)
		}
		if origin != "" && !strings.EqualFold(strings.TrimPrefix(strings.TrimPrefix(origin, "http://"), "https://"), host) {
			t.Errorf("%s %s with Origin %q (Host %q) = %d, want 403", method, target, origin, host, rec.Code)
		}
		if method == "POST" && !strings.HasPrefix(strings.ToLower(strings.TrimSpace(contentType)), "application/json") {
			t.Errorf("POST %s with Content-Type %q = %d, want 415", target, contentType, rec.Code)
		}
	})
}
