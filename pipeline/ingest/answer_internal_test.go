package ingest

import (
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestWriteAcceptedIsWriteJSON checks that the hand-built answer to an
// accepted webhook is byte for byte what encoding/json writes, headers too.
func TestWriteAcceptedIsWriteJSON(t *testing.T) {
	for _, tc := range []struct {
		name, id  string
		duplicate bool
	}{
		{"uuid", "01938f3e-9c1a-7b2e-8f00-0123456789ab", false},
		{"duplicate", "01938f3e-9c1a-7b2e-8f00-0123456789ab", true},
		{"quote and backslash", `a"b\c`, false},
		{"control and non-ASCII", "a\nb é <>&", true},
		{"empty", "", false},
		{"answer longer than the shared Content-Lengths", strings.Repeat("a", 200), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := httptest.NewRecorder(), httptest.NewRecorder()
			writeAccepted(got, tc.id, tc.duplicate)
			writeJSON(want, http.StatusOK, Response{ID: tc.id, Duplicate: tc.duplicate})
			if got.Code != want.Code || got.Body.String() != want.Body.String() {
				t.Fatalf("writeAccepted: %d %q, writeJSON: %d %q", got.Code, got.Body, want.Code, want.Body)
			}
			for _, h := range []string{"Content-Type", "Content-Length"} {
				if g, w := got.Header().Get(h), want.Header().Get(h); g != w {
					t.Errorf("%s = %q, writeJSON sets %q", h, g, w)
				}
			}
		})
	}
}

// TestIsJSONShortcut checks that the Content-Types isJSON answers without
// mime.ParseMediaType are JSON by it too.
func TestIsJSONShortcut(t *testing.T) {
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8"} {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" || !isJSON(ct) {
			t.Errorf("%q: ParseMediaType = %q, %v; isJSON = %v", ct, mt, err, isJSON(ct))
		}
	}
}

// TestLowerHeaders checks that the names headers() looks up instead of
// lower-casing are spelled as net/http hands them over.
func TestLowerHeaders(t *testing.T) {
	for k, lk := range lowerHeaders {
		if http.CanonicalHeaderKey(k) != k || lk != strings.ToLower(k) {
			t.Errorf("lowerHeaders[%q] = %q: want a canonical key and its lower case", k, lk)
		}
	}
	hs := http.Header{"Content-Type": {"application/json"}, "X-Custom": {"1"}, "Authorization": {"secret"}}
	got, _ := headers(hs, nil, nil)
	if len(got) != 2 || got["content-type"] != "application/json" || got["x-custom"] != "1" {
		t.Errorf("headers() = %v, want content-type and x-custom, lower-cased, without authorization", got)
	}
}
