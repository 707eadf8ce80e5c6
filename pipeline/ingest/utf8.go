package ingest

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// notUTF8 says why the valid JSON body is not UTF-8 text, "" when it is:
// a byte that is not UTF-8 (RFC 8259 §8.1: JSON is exchanged as UTF-8), or
// a \u escape of a surrogate that is not half of a pair (§8.2: its reading
// is unpredictable; encoding/json and so the rules read U+FFFD, PostgreSQL
// refuses it). Either way, two bodies that differ only there decode alike.
func notUTF8(body []byte) string {
	if !utf8.Valid(body) {
		i := 0
		for i < len(body) {
			r, size := utf8.DecodeRune(body[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		return fmt.Sprintf("body is not UTF-8 at byte %d (0x%02x): send JSON as UTF-8", i, body[i])
	}
	// In valid JSON a backslash is only in a string, and it escapes the
	// next character: a \u is an escape when an odd run of backslashes
	// ends at it.
	for i := 0; ; {
		j := bytes.Index(body[i:], []byte(`\u`))
		if j < 0 {
			return ""
		}
		i += j
		run := 1
		for k := i - 1; k >= 0 && body[k] == '\\'; k-- {
			run++
		}
		if run%2 == 0 { // an escaped backslash, then a 'u'
			i += 2
			continue
		}
		if i+6 > len(body) { // not valid JSON: not for this check to say
			return ""
		}
		r := hex4(body[i+2 : i+6])
		switch {
		case r >= 0xd800 && r < 0xdc00 && i+12 <= len(body) && body[i+6] == '\\' && body[i+7] == 'u' &&
			hex4(body[i+8:i+12]) >= 0xdc00 && hex4(body[i+8:i+12]) < 0xe000:
			i += 12 // a pair: one character
		case r >= 0xd800 && r < 0xe000:
			return fmt.Sprintf(`body has a lone surrogate \u%04x at byte %d, half of a character: send the character whole, or leave it out`, r, i)
		default:
			i += 6
		}
	}
}

// hex4 returns the value of four hex digits.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}
