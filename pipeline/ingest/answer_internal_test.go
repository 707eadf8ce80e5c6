package ingest

import (
	"net/http"
	"net/http/httptest"
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
