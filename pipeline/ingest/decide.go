package ingest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// Request is one webhook request to a source as [Config.Decide] sees it:
// what the handler read off the wire, or what a rule test case describes.
type Request struct {
	// Header holds the request headers.
	Header http.Header
	// Body is the request body. Decide reads at most Config.MaxBody+1
	// bytes of it; the handler passes an [http.MaxBytesReader] when the
	// body's length is not declared, so that an oversized body also
	// closes the connection (a declared one longer than MaxBody is
	// refused before it is read, and net/http never reads past the
	// declared length).
	Body io.Reader
	// ContentLength is the declared length of Body, -1 when unknown.
	ContentLength int64
	// ReceivedAt is when the request arrived: the event's received_at, and
	// the "now" against which signed timestamps are checked.
	ReceivedAt time.Time
	// ID is the id the event gets if it is accepted.
	ID string
	// RemoteAddr is the peer's address, kept with a rejection.
	RemoteAddr string
	// Query is the raw query string of the request's URL (without the
	// "?"): a url-token source's token is there ([auth.URLVerifier]).
	// Nothing else reads it, and nothing logs or keeps it.
	Query string
	// Admit, when not nil, is asked once the request is authenticated
	// whether the source takes it now: it returns 0 to admit it, or how
	// long the sender should wait (answered 429). The handler passes the
	// source's rate limiter here; it is the one effect of a decision, and
	// it is the caller's. `pipelined test` passes nil.
	Admit func() time.Duration
	// Context, when not nil, stops the rules' evaluations once it is done
	// (the handler passes the request's: the sender left).
	Context context.Context
}

// Decision is what pipelined does with a [Request]: append Entry, or refuse
// the request with Status.
type Decision struct {
	// Status is the HTTP status of the answer: [http.StatusOK] when Entry
	// is to be appended (the log then says whether it is a duplicate).
	Status int
	// Outcome is the metrics outcome of a refusal (one of the
	// metrics.Outcome constants); "" when the request is accepted.
	Outcome string
	// Ignored is true when the source's ignore rule was true: the request
	// is answered Status 200 with Error as the reason, and nothing is
	// appended (Outcome is metrics.OutcomeIgnored).
	Ignored bool
	// Error is the one-line reason of a refusal (or of Ignored); Violations, for a 422
	// from a JSON Schema, the problems it found.
	Error      string
	Violations []string
	// LogReason, when not "", is the reason the log and the rejection
	// audit keep instead of Error: a 422 of the accept rule tells the
	// sender only that the source did not accept the event, the log
	// names the rule.
	LogReason string
	// RuleErr is the runtime error of the source's ignore or accept rule,
	// or the error of a body too costly to check against its JSON Schema
	// (RuleExpr says which: "ignore", "accept" or "schema"), without the
	// event's values: the caller logs and counts it as a rule error.
	RuleErr  error
	RuleExpr string
	// RetryAfter is how long a 429's sender should wait.
	RetryAfter time.Duration

	// Entry is the event to append, with its dedup key and targets.
	Entry pipeline.Entry
	// Env is the event as the rules saw it; nil when the request was
	// refused before its body was decoded.
	Env *rules.Env
	// DedupKeyErr is the error of the source's dedup_key: the event is
	// accepted without a dedup key. RouteErrs are the routes' runtime
	// errors (each a [*rules.RouteError]). The caller logs and counts them.
	DedupKeyErr error
	RouteErrs   []error

	// Rejection, when not nil, is what the rejection audit keeps of a
	// refused request: its source keeps rejected requests.
	Rejection *pipeline.Rejection
}

// Accepted reports whether d appends its Entry.
func (d *Decision) Accepted() bool { return d.Status == http.StatusOK && !d.Ignored }

// Decide says what pipelined does with req sent to src, in the order the
// checks are made: content type (415), declared and actual body size
// (413), reading the body (400), the source's authentication (401),
// req.Admit (429), JSON (400: nesting past [MaxDepth], malformed, a key
// twice in one object unless src.AllowDuplicateKeys, or text that is not
// UTF-8 unless src.AllowInvalidUTF8), the source's
// ignore rule (200, ignored: not appended), the source's accept rule and
// JSON Schema (422); then the dedup key and every route. Apart from
// calling req.Admit it has no effect: it neither logs nor counts, and the
// handler and `pipelined test` both call it, so a rule test sees what the
// daemon answers.
func (c *Config) Decide(src *Source, req Request) Decision {
	return c.decide(src, req, nil)
}

// decide is Decide for the handler, which passes in held what the request
// holds while it is served: once it is authenticated and admitted, decide
// takes one of the server's request slots (max_concurrent), then a share
// of body memory for decoding (max_body_memory), each answered 503 when
// none is left. Taking them only then keeps unauthenticated senders, slow
// or not, from using up what authenticated ones need. Decide passes nil:
// `pipelined test` takes neither.
func (c *Config) decide(src *Source, req Request, held *inflight) Decision {
	refuse := func(status int, outcome, reason string, body []byte) Decision {
		d := Decision{Status: status, Outcome: outcome, Error: reason}
		d.Rejection = rejection(src, &req, status, reason, nil, body)
		return d
	}
	if ct := req.Header.Get("Content-Type"); !isJSON(ct) {
		return refuse(http.StatusUnsupportedMediaType, metrics.OutcomeUnsupportedMediaType,
			"content type "+strconv.Quote(src.Redactor.Redact(ct))+" is not JSON: send Content-Type: application/json", nil)
	}
	if ce := req.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(strings.TrimSpace(ce), "identity") {
		// Not decoded: signatures are over the bytes as sent, and a
		// compressed body would only reach the JSON check as noise.
		return refuse(http.StatusUnsupportedMediaType, metrics.OutcomeUnsupportedMediaType,
			"content encoding "+strconv.Quote(src.Redactor.Redact(ce))+" is not supported: send the body uncompressed", nil)
	}
	max := c.MaxBody
	if req.ContentLength > max {
		return refuse(http.StatusRequestEntityTooLarge, metrics.OutcomeTooLarge,
			fmt.Sprintf("body of %d bytes is larger than the limit of %d bytes", req.ContentLength, max), nil)
	}
	body, err := readBody(req.Body, req.ContentLength, max)
	_, tooBig := errors.AsType[*http.MaxBytesError](err) // no allocation, error or not
	switch {
	case tooBig || int64(len(body)) > max:
		return refuse(http.StatusRequestEntityTooLarge, metrics.OutcomeTooLarge,
			fmt.Sprintf("body is larger than the limit of %d bytes", max), body[:min(int64(len(body)), max)])
	case err != nil:
		return readFailed(err)
	}
	authName := "none"
	if src.Verifier != nil {
		var err error
		if uv, ok := src.Verifier.(auth.URLVerifier); ok {
			err = uv.VerifyURL(req.Query, req.Header, body, req.ReceivedAt)
		} else {
			err = src.Verifier.Verify(req.Header, body, req.ReceivedAt)
		}
		if err != nil {
			reason := "authentication failed"
			var ae *auth.Error
			if errors.As(err, &ae) {
				reason = ae.Reason
			}
			return refuse(http.StatusUnauthorized, metrics.OutcomeUnauthorized, reason, body)
		}
		authName = src.Verifier.Name()
	}
	if req.Admit != nil {
		if wait := req.Admit(); wait > 0 {
			return Decision{Status: http.StatusTooManyRequests, Outcome: metrics.OutcomeRateLimited, RetryAfter: wait,
				Error: "source " + strconv.Quote(src.Name) + " is over its rate: retry after the Retry-After delay"}
		}
	}
	if held != nil {
		if !held.takeSlot() {
			return unavailable("too many requests in flight: retry shortly")
		}
		if !held.takeMemory(int64(len(body))) {
			return unavailable("too many large bodies in flight: retry shortly")
		}
	}
	// One pass decodes a valid body and measures its depth; what the fast
	// decoder leaves is measured by Depth, then decoded by encoding/json.
	doc, sh, ok := decodeOwned(body) // body is this request's alone and never written again
	depth := sh.depth
	if !ok {
		depth = Depth(body)
	}
	if depth > MaxDepth {
		return refuse(http.StatusBadRequest, metrics.OutcomeBadJSON,
			fmt.Sprintf("body nests %d levels deep, more than the limit of %d", depth, MaxDepth), body)
	}
	if !ok {
		if doc, err = decodeStd(body); err != nil {
			return refuse(http.StatusBadRequest, metrics.OutcomeBadJSON, "body is not valid JSON: "+jsonError(err), body)
		}
	}
	if sh.dupped && !src.AllowDuplicateKeys {
		return refuse(http.StatusBadRequest, metrics.OutcomeBadJSON, dupKeyError(sh.dup, src.Name), body)
	}
	if !src.AllowInvalidUTF8 && (!ok || sh.notText) { // what the fast decoder read whole is text
		if reason := notUTF8(body); reason != "" {
			return refuse(http.StatusBadRequest, metrics.OutcomeBadJSON,
				reason+" (or set allow_invalid_utf8 = true on source "+strconv.Quote(src.Name)+")", body)
		}
	}

	hdrs, hdrsText := headers(req.Header, src.DropHeaders, src.Redactor)
	ev := pipeline.Event{
		ID:         req.ID,
		Source:     src.Name,
		ReceivedAt: req.ReceivedAt.UTC(),
		Headers:    hdrs,
		Body:       body,
		Auth:       authName,
	}
	env := &rules.Env{Body: doc, Source: ev.Source, Headers: ev.Headers, ID: ev.ID, ReceivedAt: ev.ReceivedAt}
	ctx := req.Context
	if ctx == nil {
		ctx = context.Background()
	}
	var ignoreErr error
	if src.Ignore != nil {
		// An error counts as false: accept and the schema then say what
		// is wrong with the body (an array is "expected object").
		ok, err := src.Ignore.BoolContext(ctx, env)
		ignoreErr = err
		if err == nil && ok {
			// The sender is told the event is ignored, not the rule; the
			// log and the audit keep the rule.
			answer := "source " + strconv.Quote(src.Name) + " ignores this event"
			reason := answer + ": ignore rule " + src.Ignore.Source() + " is true"
			d := Decision{Status: http.StatusOK, Outcome: metrics.OutcomeIgnored, Ignored: true, Error: answer, LogReason: reason, Env: env}
			d.Rejection = rejection(src, &req, d.Status, reason, nil, body)
			return d
		}
	}
	if v := validate(ctx, src, env); v.answer != "" {
		d := Decision{Status: http.StatusUnprocessableEntity, Outcome: metrics.OutcomeUnprocessable, Error: v.answer,
			LogReason: v.log, Violations: v.violations, Env: env, RuleErr: v.err}
		if v.err != nil {
			d.RuleExpr = v.expr
		}
		logReason := v.answer
		if v.log != "" {
			logReason = v.log
		}
		d.Rejection = rejection(src, &req, d.Status, logReason, v.violations, body)
		return d
	}
	d := Decision{Status: http.StatusOK, Env: env, Entry: pipeline.Entry{Event: ev, DedupWindow: src.DedupWindow}}
	if ignoreErr != nil {
		d.RuleErr, d.RuleExpr = ignoreErr, ruleIgnore
	}
	switch {
	case src.DedupKey != nil:
		denv := env
		if !hdrsText {
			// A header that is not UTF-8 reads as U+FFFD in ev.Headers:
			// the key is made from its bytes, so that two that differ
			// there are two keys.
			e := *env
			e.Headers = rawHeaders(req.Header, src.DropHeaders, src.Redactor)
			denv = &e
		}
		d.Entry.DedupKey, d.DedupKeyErr = src.DedupKey.StringContext(ctx, denv)
	case src.DedupHeader != "":
		d.Entry.DedupKey = rules.StringKey(auth.DedupKey(req.Header, src.DedupHeader))
	}
	d.Entry.DedupKey = textKey(d.Entry.DedupKey) // a header's bytes, or a string expr cut between bytes
	if c.Router != nil {
		sp := telemetry.StartRoute(ctx) // nil unless the request is traced
		d.Entry.Targets, d.RouteErrs = c.Router.RouteContext(ctx, env)
		telemetry.EndRoute(sp, d.Entry.Targets, d.RouteErrs)
		for i := range d.Entry.Targets {
			d.Entry.Targets[i].Err = validUTF8(d.Entry.Targets[i].Err) // may quote such a string
		}
	}
	return d
}

// textKey returns the dedup key k as the log keeps it, UTF-8: k itself
// when it is, else "(bytes)" and k's bytes in hex. validUTF8 would make
// one key of "ord-\xfc" and "ord-\xe4" (both "ord-\uFFFD", and a run of
// such bytes is one U+FFFD): the second event, another one, answered
// duplicate and dropped. No string key starts with "(" ([rules.StringKey]),
// so no other key is spelled so.
func textKey(k string) string {
	if utf8.ValidString(k) {
		return k
	}
	return "(bytes)" + hex.EncodeToString([]byte(k))
}

// rawHeaders returns the headers as [headers] does but with their bytes as
// sent: for a request whose headers were not all UTF-8. Each value is
// redacted once, as sent (headers' own values are only the set to keep).
func rawHeaders(hs http.Header, drop []string, r *auth.Redactor) map[string]string {
	out, _ := headers(hs, drop, nil)
	for k, v := range hs {
		if lk := strings.ToLower(k); out[lk] != "" {
			out[lk] = r.Redact(strings.Join(v, ", "))
		}
	}
	return out
}

// validUTF8 returns s with each byte that is not UTF-8 replaced by U+FFFD,
// as JSON shows it; s itself, not a copy, when it is valid. The log keeps
// strings as UTF-8 and refuses others, which would answer the request 503
// for ever, and every request that shares its group commit with it. So
// every string of an entry that a request's bytes can reach goes through
// it: header values (before the rules see them), the dedup key, a
// transform's error. Sources, routes and sinks are the config's, ids
// and trace context the daemon's.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// preallocBody bounds what readBody allocates for a body before its bytes
// come: webhooks are a few KiB.
const preallocBody = 64 << 10

// readBody reads at most max+1 bytes of r, as io.ReadAll of an
// io.LimitReader does, into one buffer sized by the declared length when
// there is one (at most max+1): one allocation instead of ReadAll's
// doubling from 512 bytes. Past [preallocBody] the buffer grows as bytes
// come: the body is read before the request is authenticated, and a
// sender that declares a large body and sends it slowly must not hold that
// memory on each of its connections for the bytes it has not sent.
func readBody(r io.Reader, declared, max int64) ([]byte, error) {
	if declared <= 0 {
		return io.ReadAll(io.LimitReader(r, max+1))
	}
	b := make([]byte, 0, min(declared, max, preallocBody)+1)
	lr := io.LimitedReader{R: r, N: max + 1} // a value: io.LimitReader's pointer is one more allocation
	for {
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // a body longer than declared: let append grow it
		}
	}
}

// verdict is what validate says of an event: answer, for the sender, ""
// when the event may go on; log, when not "", what the log keeps instead
// (it names the rule); err, the accept rule's runtime error or the
// schema's [rules.ErrTooComplex], and expr which ("accept", "schema").
type verdict struct {
	answer, log string
	violations  []string
	err         error
	expr        string
}

// validate applies src's accept rule, then its JSON Schema, to an event
// that passed authentication and JSON decoding. Its answer is "" when the
// event may go on to dedup and routing; else a reason (answered 422). An
// accept rule that is false or fails is answered "source X does not
// accept this event" without the rule's text (the sender need not learn
// the rules); the log gets the rule, and the error without the event's
// values. A schema's answer names the schema and (violations) the first
// [rules.MaxViolations] problems as "JSON-pointer: what is wrong"; a body
// that could cost the schema's check more than its budget (P9) is
// answered "body too complex to check against the schema of source X
// (file): ..." without being checked.
func validate(ctx context.Context, src *Source, env *rules.Env) verdict {
	if src.Accept != nil {
		ok, err := src.Accept.BoolContext(ctx, env)
		if err != nil || !ok {
			// Built only for a refusal: most events pass.
			answer := "source " + strconv.Quote(src.Name) + " does not accept this event"
			if err != nil {
				return verdict{answer: answer, err: err, expr: ruleAccept,
					log: "source " + strconv.Quote(src.Name) + ": accept rule " + src.Accept.Source() + " failed: " + firstLine(err.Error())}
			}
			return verdict{answer: answer, log: answer + ": accept rule " + src.Accept.Source() + " is false"}
		}
	}
	if src.Schema != nil {
		v, err := src.Schema.Check(env.Body)
		if err != nil {
			why := strings.TrimPrefix(err.Error(), rules.ErrTooComplex.Error()+": ")
			return verdict{answer: "body too complex to check against the schema of source " + strconv.Quote(src.Name) + " (" + schemaFile(src) + "): " + why,
				err: err, expr: ruleSchema}
		}
		if len(v) > 0 {
			return verdict{answer: "body does not match the schema of source " + strconv.Quote(src.Name) + " (" + schemaFile(src) + "): " + v[0], violations: v}
		}
	}
	return verdict{}
}

// schemaFile names src's schema in an answer: its file's name, not its
// path, since the answer goes to the sender, who has no business knowing
// where this host keeps its files.
func schemaFile(src *Source) string { return filepath.Base(src.Schema.Name()) }

// firstLine keeps the answer one line: expr errors go on with the
// expression and a caret under the fault.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// rejection returns what the audit keeps of a refused request, nil when
// src keeps no rejected requests. body is nil when it was not read.
func rejection(src *Source, req *Request, status int, reason string, violations []string, body []byte) *pipeline.Rejection {
	if src.KeepRejected <= 0 {
		return nil
	}
	size := int64(len(body))
	if body == nil {
		size = req.ContentLength // -1 when unknown
	}
	// Cut before the redaction: a stranger's headers are redacted only
	// as far as they are kept (P9).
	hdrs, _ := headers(req.Header, src.DropHeaders, nil)
	hdrs = cutHeaders(hdrs, MaxRejectedHeaders)
	if src.Redactor != nil {
		for k, v := range hdrs {
			hdrs[k] = src.Redactor.Redact(v)
		}
	}
	rj := &pipeline.Rejection{
		Source:     src.Name,
		ReceivedAt: req.ReceivedAt.UTC(),
		Status:     status,
		Reason:     reason,
		Violations: violations,
		Headers:    hdrs,
		BodySize:   size,
		RemoteAddr: req.RemoteAddr,
		Keep:       src.KeepRejected,
		KeepMax:    src.KeepRejectedMax,
	}
	if len(body) > MaxRejectedBody {
		n := MaxRejectedBody
		for n > MaxRejectedBody-utf8.UTFMax && !utf8.RuneStart(body[n]) {
			n-- // cut between characters, so the kept text stays UTF-8
		}
		body, rj.Truncated = body[:n], true
	}
	rj.Body = slices.Clone(body)
	return rj
}

// isJSON reports whether a Content-Type is JSON: application/json or any
// application/*+json type, with any parameters.
func isJSON(contentType string) bool {
	switch contentType {
	case "application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8":
		return true // what nearly every sender sends, without ParseMediaType's map
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// secretHeaders are never stored with an event or a rejected request nor
// shown to rules: credentials, and the signatures of the common schemes
// (a stored signature and body could be sent again and pass). A source
// adds the header its own auth reads and its drop_headers
// ([Source.DropHeaders]).
var secretHeaders = map[string]bool{
	"authorization":       true,
	"proxy-authorization": true,
	"cookie":              true,
	"webhook-signature":   true,
	"svix-signature":      true,
	"x-hub-signature":     true,
	"x-hub-signature-256": true,
	"stripe-signature":    true,
	"x-api-key":           true,
	"x-auth-token":        true,
}

// headers returns request headers as events keep them: lower-case names,
// the values of a header sent on several lines joined with ", " as RFC 9110
// (5.3) lets a recipient do (as UTF-8), without those that carry
// credentials (secretHeaders and drop, lower-case names). A signed header
// (webhook-id, say) never holds two: auth refuses a request that repeats
// one, so a dedup_key over it is the value that was verified. text is
// false when a value kept was not UTF-8 (its bytes are then replaced by
// U+FFFD: see rawHeaders). r, when not nil, is the source's url-token
// [auth.Redactor]: a proxy may pass the URL on in a header
// (X-Forwarded-Uri, X-Original-URL, Referer), and the token must not be
// stored, shown to rules or kept with a rejection.
func headers(hs http.Header, drop []string, r *auth.Redactor) (out map[string]string, text bool) {
	out, text = make(map[string]string, len(hs)), true
	for k, v := range hs {
		lk, ok := lowerHeaders[k]
		if !ok {
			lk = strings.ToLower(k)
		}
		if secretHeaders[lk] || len(v) == 0 || slices.Contains(drop, lk) {
			continue
		}
		s := v[0]
		if len(v) > 1 {
			s = strings.Join(v, ", ")
		}
		if !utf8.ValidString(s) { // HTTP lets a value carry bytes over 0x7f (Latin-1, say)
			s, text = validUTF8(s), false
		}
		out[lk] = r.Redact(s)
	}
	return out, text
}

// lowerHeaders holds the lower-case names of the headers most requests
// carry, as net/http canonicalizes them: strings.ToLower would allocate
// each anew per request.
var lowerHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Connection", "Content-Length", "Content-Type", "User-Agent",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id", "X-Real-Ip",
	} { // not Traceparent: TestTracingOffCostsNoAllocation compares it with any other header
		m[k] = strings.ToLower(k)
	}
	return m
}()

// cutHeaders leaves out of hs the largest headers until names and values
// add up to at most max bytes, and says so in x-pipelined-headers-cut.
func cutHeaders(hs map[string]string, max int) map[string]string {
	total := 0
	for k, v := range hs {
		total += len(k) + len(v)
	}
	if total <= max {
		return hs
	}
	names := make([]string, 0, len(hs))
	for k := range hs {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(hs[b])+len(b), len(hs[a])+len(a)), strings.Compare(a, b))
	})
	var cut []string
	for _, k := range names {
		if total <= max-256 { // room for the note below
			break
		}
		total -= len(k) + len(hs[k])
		cut = append(cut, k)
		delete(hs, k)
	}
	slices.Sort(cut)
	note := strings.Join(cut, ",")
	if len(note) > 190 {
		note = note[:190] + "..."
	}
	hs["x-pipelined-headers-cut"] = note
	return hs
}

// dupKeyError says why a body with a key twice in one object is refused.
func dupKeyError(key, source string) string {
	var replaced string
	if strings.ContainsRune(key, utf8.RuneError) {
		// Two keys that differ only in invalid UTF-8 or lone surrogates
		// are one key once decoded, to the rules as to encoding/json.
		replaced = " (invalid UTF-8 read as U+FFFD)"
	}
	if len(key) > 64 {
		key = strings.ToValidUTF8(key[:64], "") + "…"
	}
	return fmt.Sprintf("body has the key %q%s twice in one object: readers of JSON disagree on which value counts (send each key once, or set allow_duplicate_keys = true on source %q)", key, replaced, source)
}

// MaxDepth is how deep a body's arrays and objects may nest; a deeper
// body is answered 400. Every stored body is then this shallow, well
// within what encoding/json encodes (10,000) with the admin API's
// envelope around it, and within what rules walk quickly.
const MaxDepth = 128

// Depth returns how deep the arrays and objects of a JSON text nest (0
// for a scalar), counting brackets outside strings; it does not check
// that the text is valid JSON.
func Depth(body []byte) int {
	depth, deepest := 0, 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '"':
			// To the quote that closes the string: the next one after an
			// even run of backslashes (each escapes the byte after it).
			// IndexByte finds candidates many bytes at a time.
			for {
				j := bytes.IndexByte(body[i+1:], '"')
				if j < 0 {
					return deepest
				}
				i += 1 + j
				k := i - 1
				for body[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// Decode decodes a JSON body as rules see it: numbers as float64, so rules
// compare them with plain literals, except an integer that no float64
// holds exactly but an int64 does (an id from 2⁵³ up: an int64) and a
// number out of float64's range (its text); see [numberOf]. The stored
// body is never changed.
// Replays decode stored bodies with it too.
func Decode(body []byte) (any, error) {
	if doc, _, ok := decodeFast(body); ok {
		return doc, nil
	}
	return decodeStd(body)
}

// decodeStd is [Decode] by encoding/json alone: what decodeFast must
// agree with, and the answer (with its error) for what decodeFast leaves.
func decodeStd(body []byte) (any, error) {
	var doc any
	err := json.Unmarshal(body, &doc)
	var te *json.UnmarshalTypeError
	if err != nil && (!errors.As(err, &te) || !strings.HasPrefix(te.Value, "number")) {
		return doc, err
	}
	// Again, each number as its text, for numberOf to decide what it is.
	doc = nil
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	return numbers(doc), nil
}

// numbers replaces each json.Number in v by what [numberOf] makes of it.
func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		return numberOf(v.String())
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
	}
	return v
}

// jsonError says where JSON went wrong, in one line.
func jsonError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	return err.Error()
}

// readFailed is the refusal of a request whose body could not be read:
// 408 when it did not arrive in time (the server's read_timeout: a slow
// or stalled sender), else 400. The reason quotes no address: a
// *net.OpError's text names both ends of the connection, and the log
// line has the remote address in its own field. Not kept with the
// refused requests: what came of the body is not the request.
func readFailed(err error) Decision {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return Decision{Status: http.StatusRequestTimeout, Outcome: metrics.OutcomeReadError,
			Error: "request body not received in time (the server's read_timeout): send it whole, faster, or retry"}
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Err != nil {
		err = op.Err // "connection reset by peer", without "read tcp a->b"
	}
	return Decision{Status: http.StatusBadRequest, Outcome: metrics.OutcomeReadError, Error: "read body: " + err.Error()}
}
