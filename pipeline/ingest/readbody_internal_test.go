package ingest

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestReadBodyAllocatesWhatComes: a body declared large but cut short (a
// slow or lying sender, before it is authenticated) costs what came, not
// what it declared; one that comes whole is read whole.
func TestReadBodyAllocatesWhatComes(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		sent     int
		declared int64
		maxCap   int
	}{
		{"a webhook, one buffer of its length", 1100, 1100, 1101},
		{"1 MiB declared, 10 bytes sent", 10, mib, preallocBody + 1},
		{"1 MiB declared and sent", mib, mib, 2 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("x", tt.sent)
			b, err := readBody(io.MultiReader(strings.NewReader(body)), tt.declared, mib)
			if err != nil || !bytes.Equal(b, []byte(body)) {
				t.Fatalf("readBody = %d bytes, %v; want the %d sent", len(b), err, tt.sent)
			}
			if cap(b) > tt.maxCap {
				t.Errorf("readBody held %d bytes for %d sent, want at most %d", cap(b), tt.sent, tt.maxCap)
			}
		})
	}
}
