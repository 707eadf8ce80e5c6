package admin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// TestErrorsNotHTMLEscaped: an error body reads `<token>`, not
// `\u003ctoken\u003e`, for people and for jq alike.
func TestErrorsNotHTMLEscaped(t *testing.T) {
	h := admin.Handler(admin.Options{Token: []byte("t0ken"), Reload: func() (admin.ReloadResult, error) { return admin.ReloadResult{}, nil }})
	req := httptest.NewRequest(http.MethodPost, "http://localhost/v1/reload", nil)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(string(body), "Bearer <token>") {
		t.Errorf("POST /v1/reload without a token = %d %s, want 401 with \"Bearer <token>\" as written", rec.Code, body)
	}
}
