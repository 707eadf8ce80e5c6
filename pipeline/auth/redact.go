package auth

import (
	"crypto/subtle"
	"math/rand/v2"
	"slices"
	"strings"
)

// RedactDecodes is how many times over [Redactor.Redact] percent-decodes a
// value to look for a token: a URL carried in another URL's query is
// encoded once more, and one more time for each level it is nested.
const RedactDecodes = 4

// minRedactedToken is the shortest token redacted by its value: a shorter
// one ("short", say) stands in ordinary text, which it would cut up in
// every stored header; it is redacted by parameter only. A token of 32
// random characters or more is the one to configure (openssl rand -hex 32).
const minRedactedToken = 8

// Redactor removes a url-token source's credential from a header value
// before it is stored, kept with a rejected request or shown to rules. It
// redacts by parameter, as [RedactQuery] does, and by value: every
// configured token wherever it is, under another parameter's name (a
// sender given ?key=<token> by mistake, a proxy that renamed it), in a
// fragment, after a ';', or percent-encoded, whole or in part, with
// upper- or lower-case hex digits (a token of at least 8 bytes), up to
// [RedactDecodes] times over (the URL inside another URL's query). In a
// decoded value the parameter's value is redacted too (token%3D...). What is redacted is replaced by
// [Redacted] in the value as it was sent, escapes and all; the rest is
// left as it was.
//
// The value is a stranger's (a refused request's headers are kept too), so
// the search for tokens must not say by its timing how much of a token it
// matched: it compares a rolling hash of every window of a token's length
// with each token's, with the same work whatever the bytes, and compares
// the bytes, in constant time, only where the hashes are equal. Its cost
// is linear in the value's length: (1 + RedactDecodes) passes, each a hash
// step per byte and per distinct token length.
//
// A nil *Redactor leaves every value as it is.
type Redactor struct {
	param  string
	base   uint64
	groups []tokenGroup
}

// tokenGroup is the configured tokens of one length.
type tokenGroup struct {
	n      int
	pow    uint64 // base**n, to take a byte out of the window
	sums   []uint64
	tokens []string
}

// NewRedactor returns the [Redactor] of a url-token source, nil for every
// other type. s's secrets may be missing (pipelined test without them):
// it then redacts by parameter only.
func NewRedactor(s Spec) *Redactor {
	param := SecretParam(s)
	if param == "" {
		return nil
	}
	r := &Redactor{param: param, base: rand.Uint64() | 1}
	for _, sec := range s.Secrets {
		if len(sec) < minRedactedToken {
			continue // by parameter only
		}
		tok := string(sec)
		i := slices.IndexFunc(r.groups, func(g tokenGroup) bool { return g.n == len(tok) })
		if i < 0 {
			pow := uint64(1)
			for range len(tok) {
				pow *= r.base
			}
			r.groups = append(r.groups, tokenGroup{n: len(tok), pow: pow})
			i = len(r.groups) - 1
		}
		g := &r.groups[i]
		g.sums = append(g.sums, r.sum(tok))
		g.tokens = append(g.tokens, tok)
	}
	return r
}

func (r *Redactor) sum(s string) uint64 {
	var h uint64
	for i := 0; i < len(s); i++ {
		h = h*r.base + uint64(s[i])
	}
	return h
}

// span is a part of the value as sent, [start, end), to be redacted.
type span struct{ start, end int }

// Redact returns v with the configured parameter's value and every
// configured token redacted (see [Redactor]); v itself, without
// allocating, when it holds neither and no percent-escape.
func (r *Redactor) Redact(v string) string {
	if r == nil {
		return v
	}
	var spans []span
	layer, at := v, []int(nil) // at[i]: where layer[i] starts in v; nil: layer is v
	for k := 0; ; k++ {
		spans = r.tokenSpans(spans, layer, at)
		spans = paramSpans(spans, layer, at, r.param)
		if k == RedactDecodes {
			break
		}
		var ok bool
		if layer, at, ok = unescape(layer, at); !ok {
			break
		}
	}
	return replaceSpans(v, spans)
}

// replaceSpans returns v with each of spans (of v, in any order,
// overlapping or empty) replaced by [Redacted], overlapping and adjacent
// ones by one; v itself when there is none.
func replaceSpans(v string, spans []span) string {
	if len(spans) == 0 {
		return v
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	var b strings.Builder
	b.Grow(len(v))
	last := 0
	for i := 0; i < len(spans); {
		s := spans[i]
		for i++; i < len(spans) && spans[i].start <= s.end; i++ {
			s.end = max(s.end, spans[i].end)
		}
		b.WriteString(v[last:s.start])
		b.WriteString(Redacted)
		last = s.end
	}
	b.WriteString(v[last:])
	return b.String()
}

// tokenSpans appends to spans where layer holds a configured token, as
// spans of v (see Redact for at).
func (r *Redactor) tokenSpans(spans []span, layer string, at []int) []span {
	for gi := range r.groups {
		g := &r.groups[gi]
		n, sums, base, pow := g.n, g.sums, r.base, g.pow // in registers: the loop runs per byte
		if len(layer) < n {
			continue
		}
		h := r.sum(layer[:n])
		for i := n; ; i++ {
			// The same work at every window, whatever its bytes: a
			// comparison of the bytes only where a hash is a token's.
			for j, sum := range sums {
				if h == sum && subtle.ConstantTimeCompare([]byte(layer[i-n:i]), []byte(g.tokens[j])) == 1 {
					spans = append(spans, span{pos(at, i-n), pos(at, i)})
				}
			}
			if i == len(layer) {
				break
			}
			h = h*base + uint64(layer[i]) - pow*uint64(layer[i-n])
		}
	}
	return spans
}

// paramSpans appends to spans the values of the parameters named param in
// layer, as RedactQuery finds them, as spans of v.
func paramSpans(spans []span, layer string, at []int, param string) []span {
	for i := 0; i < len(layer); {
		j := i
		for j < len(layer) && layer[j] != '=' && !isQuerySep(layer[j]) {
			j++
		}
		if j < len(layer) && layer[j] == '=' && paramIs(layer[i:j], param) {
			end := j + 1
			for end < len(layer) && layer[end] != '&' {
				end++
			}
			spans = append(spans, span{pos(at, j+1), pos(at, end)}) // an empty one too: token=REDACTED
			i = end
			continue
		}
		k := j
		for k < len(layer) && !isQuerySep(layer[k]) {
			k++
		}
		i = k + 1
	}
	return spans
}

// pos returns where byte i of a layer starts in the value as sent.
func pos(at []int, i int) int {
	if at == nil {
		return i
	}
	return at[i]
}

// unescape returns s with each %XX (either case) decoded and what is not
// an escape as it is, and where each of its bytes starts in the value as
// sent (one more for its end), given at for s (nil: s is that value). ok
// is false when s holds no escape.
func unescape(s string, at []int) (out string, outAt []int, ok bool) {
	i := strings.IndexByte(s, '%')
	for i >= 0 && (i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2])) {
		n := strings.IndexByte(s[i+1:], '%')
		if n < 0 {
			return "", nil, false
		}
		i += 1 + n
	}
	if i < 0 {
		return "", nil, false
	}
	b := make([]byte, 0, len(s))
	outAt = make([]int, 0, len(s)+1)
	for j := 0; j < len(s); {
		outAt = append(outAt, pos(at, j))
		if s[j] == '%' && j+2 < len(s) && ishex(s[j+1]) && ishex(s[j+2]) {
			b = append(b, unhex(s[j+1])<<4|unhex(s[j+2]))
			j += 3
			continue
		}
		b = append(b, s[j])
		j++
	}
	outAt = append(outAt, pos(at, len(s)))
	return string(b), outAt, true
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
