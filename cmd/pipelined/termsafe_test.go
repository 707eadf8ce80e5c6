package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// hostile are strings a webhook sender can put in what the CLI prints.
var hostile = map[string]string{
	"osc title":        "\x1b]0;PWNED-TITLE\x07",
	"csi clear, color": "\x1b[2J\x1b[31mRED\x1b[0m",
	"cr overwrite":     "ok\rFAKE",
	"backspaces":       "secret\b\b\b\b\b\b",
	"del":              "a\x7fb",
	"c1 csi":           "\u009b2J\u009d0;T\u009c",
	"nel":              "a\u0085b",
	"bidi override":    "invoice\u202efdp.exe",
	"bidi isolate":     "\u2066x\u2069\u2067y\u2068z\u202a\u202b\u202c\u202d",
	"zero width":       "a\u200bb\u200cc\u200dd\u200ee\u200ff\ufeff",
	"line separator":   "a\u2028b\u2029c",
	"tag characters":   "hi\U000e0041\U000e007f",
	"invalid utf-8":    "a\xffb\xc2c\x9b2J\xe2\x80",
	"tab and newline":  "a\tb\nc",
}

// unsafeRune returns the first rune or byte of s that a terminal could act
// on, and whether there is one; with lines, \n and \t are allowed.
func unsafeRune(s string, lines bool) (string, bool) {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 ||
			!(lines && (r == '\n' || r == '\t')) && unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return s[i : i+n], true
		}
		i += n
	}
	return "", false
}

func TestTermSafe(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		lines bool
		want  string
	}{
		{"empty", "", false, ""},
		{"ascii", "slack said 400: invalid_blocks", false, "slack said 400: invalid_blocks"},
		{"utf-8 text", "Zoë → 東京 ✓ \ufffd", false, "Zoë → 東京 ✓ \ufffd"},
		{"backslash", `C:\dir \u001b`, false, `C:\dir \u001b`},
		{"osc title", "\x1b]0;PWNED-TITLE\x07", false, `\u001b]0;PWNED-TITLE\u0007`},
		{"csi", "\x1b[2J\x1b[31mRED\x1b[0m", false, `\u001b[2J\u001b[31mRED\u001b[0m`},
		{"nul, cr, del", "a\x00b\rc\x7fd", false, `a\u0000b\rc\u007fd`},
		{"tab and newline in a cell", "a\tb\nc", false, `a\tb\nc`},
		{"tab and newline in lines", "a\tb\nc\r\n", true, "a\tb\nc\\r\n"},
		{"esc in lines", "{\n  \"a\": \x1b[2J\n}", true, "{\n  \"a\": \\u001b[2J\n}"},
		{"c1", "\u0085\u009b2J\u009f", false, `\u0085\u009b2J\u009f`},
		{"bidi override", "invoice\u202efdp.exe", false, `invoice\u202efdp.exe`},
		{"bidi isolates", "\u2066\u2067\u2068\u2069\u061c", false, `\u2066\u2067\u2068\u2069\u061c`},
		{"zero width", "a\u200bb\u200dc\u200ed\u200fe\ufeff", false, `a\u200bb\u200dc\u200ed\u200fe\ufeff`},
		{"separators", "a\u2028b\u2029c", true, `a\u2028b\u2029c`},
		{"tags", "hi\U000e0041", false, `hi\udb40\udc41`},
		{"invalid utf-8", "a\xffb\x9bc\xe2\x80", false, `a\xffb\x9bc\xe2\x80`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := termSafe(tt.in, tt.lines); got != tt.want {
				t.Errorf("termSafe(%q, %v) = %q, want %q", tt.in, tt.lines, got, tt.want)
			}
		})
	}
	for name, s := range hostile {
		t.Run("hostile "+name, func(t *testing.T) {
			for _, lines := range []bool{false, true} {
				got := termSafe(s, lines)
				if r, ok := unsafeRune(got, lines); ok {
					t.Errorf("termSafe(%q, %v) = %q, which holds %q", s, lines, got, r)
				}
				if !lines && strings.ContainsAny(got, "\t\n") {
					t.Errorf("termSafe(%q, false) = %q: a tab or a newline in a cell", s, got)
				}
			}
		})
	}
}

// TestTermSafeKeepsJSON: in a JSON text that is UTF-8 the escapes are
// JSON's, so a body printed by events show still decodes to the same value.
func TestTermSafeKeepsJSON(t *testing.T) {
	in := "{\"id\": \"x\u202ey\u009b\u007f\U000e0041\u2028\", \"n\": [1,\n 2]}"
	var want, got any
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	out := termSafe(in, true)
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("termSafe(%q, true) = %q, not JSON: %v", in, out, err)
	}
	if a, b := got.(map[string]any)["id"], want.(map[string]any)["id"]; a != b {
		t.Errorf("termSafe(%q, true) decodes to id %q, want %q", in, a, b)
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefg..."},
		{"abcdefg→xy", 10, "abcdefg..."}, // the cut falls at the start of →
		{"abcdef→xyz", 10, "abcdef..."},  // inside →: back to its start
		{"ab" + strings.Repeat("\x80", 9), 10, "ab" + strings.Repeat("\x80", 5) + "..."}, // not UTF-8: where it falls
	}
	for _, tt := range tests {
		if got := cut(tt.in, tt.n); got != tt.want {
			t.Errorf("cut(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
