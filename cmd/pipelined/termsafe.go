package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// termSafe returns s with everything a terminal would act on, rather than
// show, written as a visible escape. The daemon's answers carry text that
// webhook senders chose (ids, dedup keys, headers, the key names in a
// schema error, plugin errors that quote a body), and a terminal acts on
// ESC ] 0 ; ... BEL (retitle the window), ESC [ 2 J (clear it), the 8-bit
// forms of such sequences (U+009B is CSI), CR (write over the line) and
// U+202E (show the rest of the line backwards). The escape shows the
// operator that something was there.
//
// Escaped are the controls (Unicode Cc: C0, DEL and C1), the format
// characters (Cf: the bidi marks, embeddings, overrides and isolates
// U+200E-U+200F, U+202A-U+202E and U+2066-U+2069, the zero-width
// U+200B-U+200D and U+FEFF, the tags U+E0000-U+E007F, ...) and the line
// and paragraph separators U+2028 and U+2029, each as JSON writes it
// (\n, \t, \r, \u001b, \u202e; a pair of \u escapes above U+FFFF), and
// each byte that is not UTF-8 as \xNN. So a JSON text stays JSON, and
// means the same, as long as it is UTF-8. With lines, \n and \t are kept:
// text of several lines printed outside a table (a body, an error).
//
// A backslash is left as it is: a sender can write the six characters
// \u001b, which then print as they are and do nothing.
func termSafe(s string, lines bool) string {
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; (c < 0x20 || c >= 0x7f) && !(lines && (c == '\n' || c == '\t')) {
			break
		}
	}
	if i == len(s) {
		return s // printable ASCII: the common case
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case lines && (r == '\n' || r == '\t'):
			b.WriteByte(s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r > 0xffff && unicode.In(r, unicode.Cf):
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// cell is s made safe for one cell of a table: on one line, without tabs
// (a tab would start another column).
func cell(s string) string { return termSafe(s, false) }

// cut returns s cut to at most n bytes, ending with "..." when it was cut,
// at the start of a rune: a character of UTF-8 is not split in two.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - 3
	for j := i; j > 0 && j > i-utf8.UTFMax; j-- {
		if utf8.RuneStart(s[j]) {
			i = j
			break
		}
	}
	return s[:i] + "..."
}
