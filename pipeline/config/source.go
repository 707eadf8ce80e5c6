package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// This file finds where things are in the TOML text, for messages.
// BurntSushi/toml keeps no public position per key, so lines are found by
// scanning the source: best effort, and a message without a line is still
// a message.

// line is one line of the source with the table it belongs to.
type line struct {
	text   string
	header string // name of the enclosing [table] or [[array]], "" at the root
	isHead bool   // the line is the header itself
	array  bool   // the header is [[...]]
	inStr  bool   // the line begins inside a multi-line string
	nested bool   // the line begins inside an array or inline table that an earlier line opened
}

var (
	headerRE = regexp.MustCompile(`^\s*\[(\[?)\s*([^\[\]]+?)\s*\]\]?`)
	keyRE    = regexp.MustCompile(`^\s*([A-Za-z0-9_\-."' ]+?)\s*=`)
)

func normKey(s string) string {
	parts := strings.Split(s, ".")
	for i := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(parts[i]), `"'`)
	}
	return strings.Join(parts, ".")
}

func (c *Config) lines() []line {
	var out []line
	var x lexer
	header, array := "", false
	for _, text := range strings.Split(string(c.src), "\n") {
		l := line{text: text, inStr: x.quote != "", nested: x.depth > 0}
		if !l.inStr && !l.nested {
			if m := headerRE.FindStringSubmatch(text); m != nil {
				header, array = normKey(m[2]), m[1] == "["
				l.isHead = true
			}
		}
		l.header, l.array = header, array
		x.scan(text, 0, nil)
		out = append(out, l)
	}
	return out
}

// lexer follows TOML's strings, comments, arrays and inline tables through
// the lines of a file, so that what looks like a key or a header inside
// one of them is not taken for one. Best effort, as everything here: the
// file has parsed already.
type lexer struct {
	quote string // the quote of the open string: ", ', """ or '''; "" outside one
	depth int    // arrays and inline tables open
}

// scan reads text from byte from on. For each byte outside strings and
// comments it calls at, if not nil, before that byte changes the state;
// when at returns false the scan stops there.
func (x *lexer) scan(text string, from int, at func(j int) bool) {
	for j := from; j < len(text); j++ {
		ch := text[j]
		if x.quote != "" {
			switch {
			case ch == '\\' && x.quote[0] == '"':
				j++
			case strings.HasPrefix(text[j:], x.quote):
				// A multi-line string may end with up to two more quotes,
				// which belong to it.
				j += len(x.quote) - 1
				for n := 0; n < 2 && len(x.quote) == 3 && j+1 < len(text) && text[j+1] == x.quote[0]; n++ {
					j++
				}
				x.quote = ""
			}
			continue
		}
		if at != nil && !at(j) {
			return
		}
		switch ch {
		case '"', '\'':
			x.quote = text[j : j+1]
			if strings.HasPrefix(text[j:], strings.Repeat(x.quote, 3)) {
				x.quote = text[j : j+3]
				j += 2
			}
		case '{', '[':
			x.depth++
		case '}', ']':
			x.depth = max(x.depth-1, 0)
		case '#':
			return // a comment, to the end of the line
		}
	}
	if len(x.quote) == 1 {
		x.quote = "" // a one-line string ends with its line
	}
}

// block returns the lines [start, end) of the idx-th [[table]] (idx >= 0)
// or of [table] and its subtables (idx < 0).
func (c *Config) block(ls []line, table string, idx int) (start, end int, ok bool) {
	n := -1
	start = -1
	for i, l := range ls {
		if !l.isHead || l.inStr {
			continue
		}
		if start >= 0 {
			if l.header == table && (idx < 0 || l.array) || !(l.header == table || strings.HasPrefix(l.header, table+".")) {
				return start, i, true
			}
			continue
		}
		if l.header == table && (idx < 0) == !l.array {
			n++
			if idx < 0 || n == idx {
				start = i
			}
		}
	}
	if start >= 0 {
		return start, len(ls), true
	}
	return 0, 0, false
}

func keyOnLine(text, key string, anywhere bool) int {
	var re *regexp.Regexp
	if anywhere {
		re = regexp.MustCompile(`(^|[\s{,.])` + regexp.QuoteMeta(key) + `\s*=`)
	} else {
		re = regexp.MustCompile(`^\s*` + regexp.QuoteMeta(key) + `\s*=`)
	}
	loc := re.FindStringIndex(text)
	if loc == nil {
		return -1
	}
	return loc[1] // just past '='
}

// keyPos finds key (one segment) in the idx-th [[table]] block (idx >= 0)
// or the [table] block (idx < 0). It returns the 0-based line index and the
// byte offset just past the key's '=' sign; line -1 when not found. With key
// "", it returns the block's header line.
func (c *Config) keyPos(table string, idx int, key string) (int, int) {
	if c.src == nil {
		return -1, 0
	}
	ls := c.lines()
	start, end, ok := c.block(ls, table, idx)
	if ok {
		if key == "" {
			return start, 0
		}
		for _, anywhere := range []bool{false, true} {
			for i := start; i < end; i++ {
				if ls[i].inStr {
					continue
				}
				if off := keyOnLine(ls[i].text, key, anywhere); off >= 0 {
					return i, off
				}
			}
		}
		return start, 0
	}
	if idx < 0 && key != "" {
		// Dotted keys or inline tables at the root: server.listen = ...
		for i, l := range ls {
			if l.header != "" || l.inStr {
				continue
			}
			if off := keyOnLine(l.text, table+"."+key, false); off >= 0 {
				return i, off
			}
			if keyOnLine(l.text, table, false) >= 0 {
				if off := keyOnLine(l.text, key, true); off >= 0 {
					return i, off
				}
			}
		}
	}
	return -1, 0
}

// lineOf returns the 1-based line of key in a table, 0 if unknown.
func (c *Config) lineOf(table string, idx int, key string) int {
	l, _ := c.keyPos(table, idx, key)
	return l + 1
}

// exprPos maps a position inside an expression (1-based line and column) to
// the file: the expression is the string literal after "key =" in the block.
func (c *Config) exprPos(table string, idx int, key string, eline, ecol int) (int, int) {
	l, off := c.keyPos(table, idx, key)
	if l < 0 || off == 0 {
		return l + 1, 0
	}
	ls := c.lines()
	text := ls[l].text
	rest := text[off:]
	trimmed := strings.TrimLeft(rest, " \t")
	off += len(rest) - len(trimmed)
	switch {
	case strings.HasPrefix(trimmed, `'''`) || strings.HasPrefix(trimmed, `"""`):
		off += 3
		if strings.TrimSpace(text[off:]) == "" { // the newline after ''' is trimmed
			l, off = l+1, 0
		}
	case strings.HasPrefix(trimmed, `'`) || strings.HasPrefix(trimmed, `"`):
		off++
	default:
		return l + 1, 0
	}
	if eline <= 1 {
		if l >= len(ls) {
			return l + 1, 0
		}
		return l + 1, utf8.RuneCountInString(ls[l].text[:off]) + ecol
	}
	return l + eline, ecol
}

// unknownPos is unknownLine, with the column where the key's last
// segment starts on that line (1-based, in runes; 0 when it is not found
// as written there, a quoted key say).
func (c *Config) unknownPos(k toml.Key, nth int) (line, col int) {
	line = c.unknownLine(k, nth)
	if line == 0 {
		return 0, 0
	}
	text := c.lines()[line-1].text
	re := regexp.MustCompile(`(^|[\s{,.\[])` + regexp.QuoteMeta(k[len(k)-1]) + `\s*[=\].]`)
	if loc := re.FindStringSubmatchIndex(text); loc != nil {
		return line, utf8.RuneCountInString(text[:loc[3]]) + 1
	}
	return line, 0
}

// unknownLine finds the nth (0-based) line that sets key k, 0 if unknown.
func (c *Config) unknownLine(k toml.Key, nth int) int {
	want := strings.Join(k, ".")
	last := k[len(k)-1]
	n := 0
	first := 0
	for i, l := range c.lines() {
		if l.inStr {
			continue
		}
		hit := false
		if l.isHead {
			hit = l.header == want
		} else if m := keyRE.FindStringSubmatch(l.text); m != nil {
			full := normKey(m[1])
			if l.header != "" {
				full = l.header + "." + full
			}
			hit = full == want || (strings.HasPrefix(want, full+".") && keyOnLine(l.text, last, true) >= 0)
		}
		if hit {
			if first == 0 {
				first = i + 1
			}
			if n == nth {
				return i + 1
			}
			n++
		}
	}
	return first
}

// schema is the tree of known keys, built from the toml tags.
type schema struct {
	free     bool // any key below is accepted (sink.config)
	children map[string]*schema
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func schemaOf(t reflect.Type) *schema {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return &schema{}
	}
	switch t.Kind() {
	case reflect.Map, reflect.Interface:
		return &schema{free: true}
	case reflect.Struct:
		s := &schema{children: map[string]*schema{}}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if !f.IsExported() || tag == "-" || tag == "" {
				continue
			}
			s.children[tag] = schemaOf(f.Type)
		}
		return s
	}
	return &schema{}
}

var configSchema = schemaOf(reflect.TypeFor[Config]())

// unknownKeys reports keys that are not in the schema, including keys that
// the decoder matched case-insensitively, and anything md.Undecoded lists.
func (c *Config) unknownKeys(md toml.MetaData) []error {
	var errs []error
	keys := md.Keys()
	present := map[string]bool{}
	for _, k := range keys {
		present[k.String()] = true
	}
	seen := map[string]int{} // occurrences of each reported key, for lines
	reported := map[string]bool{}
	report := func(k toml.Key, parent *schema) {
		ks := k.String()
		msg := fmt.Sprintf("unknown key %q", ks)
		last := k[len(k)-1]
		var valid []string
		for name := range parent.children {
			if strings.EqualFold(name, last) {
				msg += fmt.Sprintf(" (keys are case-sensitive: write %q)", name)
				valid = nil
				break
			}
			valid = append(valid, name)
		}
		if len(valid) > 0 {
			sort.Strings(valid)
			msg += " (valid keys"
			if len(k) > 1 {
				msg += " in " + strconv.Quote(toml.Key(k[:len(k)-1]).String())
			}
			msg += ": " + strings.Join(valid, ", ") + ")"
		}
		line, col := c.unknownPos(k, seen[ks])
		errs = append(errs, c.errAtCol(line, col, "%s", msg))
		seen[ks]++
		reported[ks] = true
	}
	for _, k := range keys {
		n := configSchema
		for i, seg := range k {
			if n.free {
				break
			}
			child, ok := n.children[seg]
			if !ok {
				prefix := k[:i+1]
				if i == len(k)-1 || !present[prefix.String()] {
					if i == len(k)-1 || !reported[prefix.String()] {
						report(prefix, n)
					}
				}
				break
			}
			n = child
		}
	}
	for _, k := range md.Undecoded() {
		if !reported[k.String()] && !freeForm(k) {
			line, col := c.unknownPos(k, 0)
			errs = append(errs, c.errAtCol(line, col, "unknown key %q", k.String()))
			reported[k.String()] = true
		}
	}
	return errs
}

// freeForm reports whether k lies under a free-form table (sink.config).
func freeForm(k toml.Key) bool {
	n := configSchema
	for _, seg := range k {
		if n.free {
			return true
		}
		if n = n.children[seg]; n == nil {
			return false
		}
	}
	return n.free
}

var lastKeyRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeError turns a decoder error into "file:line:col: message".
func (c *Config) decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg = pe.LastKey + ": " + msg
		}
		out := c.errAtCol(pe.Position.Line, pe.Position.Col, "%s", msg).Error()
		ls := strings.Split(string(c.src), "\n")
		if l := pe.Position.Line; l >= 1 && l <= len(ls) {
			out += fmt.Sprintf("\n\n% 7d | %s\n", l, ls[l-1])
			if pe.Position.Col >= 1 {
				out += strings.Repeat(" ", 10+pe.Position.Col-1) + strings.Repeat("^", max(pe.Position.Len, 1)) + "\n"
			}
			if full := pe.ErrorWithUsage(); strings.Contains(full, "Error help:") {
				out += full[strings.Index(full, "Error help:"):]
			}
		}
		return errors.New(strings.TrimRight(out, "\n"))
	}
	if m := lastKeyRE.FindStringSubmatch(err.Error()); m != nil {
		l, _ := strconv.Atoi(m[1])
		return c.errAt(l, "%s: %s", m[2], m[3])
	}
	return c.errAt(0, "%s", strings.TrimPrefix(err.Error(), "toml: "))
}

// errAt formats "file:line: message"; line 0 leaves the line out.
func (c *Config) errAt(line int, format string, args ...any) error {
	return c.errAtCol(line, 0, format, args...)
}

func (c *Config) errAtCol(line, col int, format string, args ...any) error {
	prefix := c.pos(line, col)
	if prefix != "" {
		prefix += ": "
	}
	return errors.New(prefix + fmt.Sprintf(format, args...))
}

// pos formats "file:line:col" (line and col 0 leave them out; "line N"
// without a file name).
func (c *Config) pos(line, col int) string {
	p := c.File
	if line > 0 {
		if p == "" {
			p = "line "
		} else {
			p += ":"
		}
		p += strconv.Itoa(line)
		if col > 0 {
			p += ":" + strconv.Itoa(col)
		}
	}
	return p
}

// SinkConfigPos returns where the i-th sink's config table sets key (a
// top-level key of the table; for "name.sub" not found as one, the
// top-level key "name") as "file:line:col", for the messages of the plugin
// that reads the table: the daemon checks the table's keys only through
// the plugin. With key "", or a key it does not find (one the plugin
// requires and the file lacks), it returns where the table itself begins,
// or the sink's [[sink]] header when it has no table; "" when it cannot
// tell (a config parsed without its text).
func (c *Config) SinkConfigPos(i int, key string) string {
	line, col, found := c.sinkConfigPos(i, key)
	if top, _, nested := strings.Cut(key, "."); !found && nested {
		line, col, _ = c.sinkConfigPos(i, top)
	}
	if line <= 0 {
		return ""
	}
	return c.pos(line, col)
}

// sinkConfigPos is [Config.SinkConfigPos] of one key as a 1-based line
// and column (0 when unknown), and whether it found the key rather than
// the table. The table is an inline table after "config =" (or "config.key
// =" lines), or a [sink.config] subtable of the sink's block.
func (c *Config) sinkConfigPos(i int, key string) (int, int, bool) {
	if c.src == nil {
		return 0, 0, false
	}
	ls := c.lines()
	start, end, ok := c.block(ls, "sink", i)
	if !ok {
		return 0, 0, false
	}
	const table = "sink.config"
	tl, tc := 0, 0 // where the table begins
	for n := start; n < end; n++ {
		l := ls[n]
		switch {
		case l.inStr || l.nested:
			// Inside a string or a value that began on an earlier line:
			// no key of the table begins here.
		case l.isHead && l.header == table:
			if tl == 0 {
				tl, tc = n+1, 1
			}
		case l.isHead && key != "" && l.header == table+"."+key:
			return n + 1, 1, true // [sink.config.key]
		case l.header == table && key != "":
			if keyAt(strings.TrimLeft(l.text, " \t"), key) {
				return n + 1, keyCol(l.text), true
			}
		case l.header == "sink":
			if strings.HasPrefix(strings.TrimSpace(l.text), "config.") {
				if tl == 0 {
					tl, tc = n+1, keyCol(l.text) // config.key = … lines
				}
				if key != "" && keyOnLine(l.text, "config."+key, false) >= 0 {
					return n + 1, keyCol(l.text), true
				}
			}
			off := keyOnLine(l.text, "config", false)
			if off < 0 {
				continue
			}
			if tl == 0 {
				tl, tc = n+1, keyCol(l.text)
			}
			if key == "" {
				continue
			}
			if kl, kc := inlineKey(ls[n:end], off, key); kl >= 0 {
				return n + kl + 1, kc, true
			}
		}
	}
	if tl == 0 {
		return start + 1, 1, false // no config table: the [[sink]] header
	}
	return tl, tc, false
}

// keyCol is the 1-based column of the first key on a "key = value" line.
func keyCol(text string) int {
	return utf8.RuneCountInString(text[:len(text)-len(strings.TrimLeft(text, " \t"))]) + 1
}

// inlineKey finds key among the top-level keys of the inline table that
// starts at byte off of ls[0] (just past "config ="), which may go on over
// the following lines. It returns the line (an index into ls) and the
// 1-based column of the key, or -1.
func inlineKey(ls []line, off int, key string) (int, int) {
	var x lexer
	expectKey := false // the next token begins a key of the table
	found, col := -1, 0
	for n, l := range ls {
		text := l.text
		from := 0
		if n == 0 {
			from = off
		}
		x.scan(text, from, func(j int) bool {
			switch ch := text[j]; {
			case ch == ' ' || ch == '\t':
			case expectKey && x.depth == 1:
				if keyAt(text[j:], key) {
					found, col = n, utf8.RuneCountInString(text[:j])+1
					return false
				}
				expectKey = false
			case ch == '{' && x.depth == 0, ch == ',' && x.depth == 1:
				expectKey = true
			}
			return true
		})
		if found >= 0 {
			return found, col
		}
		if x.depth == 0 {
			return -1, 0 // the table ended, or the value is none
		}
	}
	return -1, 0
}

// keyAt reports whether s begins with key, bare or quoted, and its "=".
func keyAt(s, key string) bool {
	for _, k := range []string{key, `"` + key + `"`, "'" + key + "'"} {
		if rest, ok := strings.CutPrefix(s, k); ok && strings.HasPrefix(strings.TrimLeft(rest, " \t"), "=") {
			return true
		}
	}
	return false
}
