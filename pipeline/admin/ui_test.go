package admin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// TestUIMount checks how the admin server mounts a web UI: / redirects to
// /ui/ and /ui/ reaches it, behind the Host and Origin checks of the API
// but not its bearer token (the UI has its own login); without a UI both
// are unknown paths.
func TestUIMount(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("the ui")) })
	for _, tc := range []struct {
		name string
		ui   http.Handler
		path string
		hdr  map[string]string
		want int
	}{
		{"redirect", ui, "/", nil, http.StatusFound},
		{"ui", ui, "/ui/", nil, http.StatusOK},
		{"ui without its slash", ui, "/ui", nil, http.StatusTemporaryRedirect},
		{"ui from another site", ui, "/ui/", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"ui by another host name", ui, "/ui/", map[string]string{"Host": "evil.example"}, http.StatusForbidden},
		{"api still needs the token", ui, "/v1/sinks", nil, http.StatusUnauthorized},
		{"no ui: /", nil, "/", nil, http.StatusUnauthorized},
		{"no ui: /ui/", nil, "/ui/", nil, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(admin.Handler(admin.Options{Token: []byte("t"), UI: tc.ui,
				Sinks: func(context.Context) ([]admin.SinkStatus, error) { return nil, nil }}))
			defer srv.Close()
			srv.Client().CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			if code, body := raw(t, srv, http.MethodGet, tc.path, "", tc.hdr); code != tc.want {
				t.Errorf("GET %s = %d %s, want %d", tc.path, code, body, tc.want)
			}
		})
	}
}
