package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pipelined/pipelined/plugins/internal/retryafter"
	"github.com/pipelined/pipelined/sdk"
)

// sink forwards events to a URL over HTTP(S).
//
// # Config
//
//	url            required; http or https address (may carry a token in its query);
//	               or url_env / url_file when the whole URL is secret
//	method         "POST"; or "PUT", "PATCH"
//	headers        {}; static header values (not secrets)
//	header_env     {}; header name → environment variable, for secret headers (Authorization)
//	timeout        "10s"; limit for one request, response included
//	body           "payload"; or "envelope"
//	content_type   "application/json"
//	concurrency    1; events of a batch in flight at once
//	max_idle_conns 0; idle keep-alive connections (0: as many as concurrency)
//	secret_env / secret_file  optional Standard Webhooks secret ("whsec_..."): sign requests;
//	               a list (["NEW", "OLD"]) sends one signature per secret
//	tls_ca_file    optional PEM CA(s) of the receiver's certificate (private CA)
//	tls_cert_file / tls_key_file  optional PEM client certificate and key (mutual TLS)
//	permanent_status [400, 413, 422]; statuses (400 to 599, not 429) that fail an
//	               event for good; every other 4xx and 5xx is retried
//
// # Requests
//
// One request per event. The body is ev.Payload() (the route's transform
// output, else the webhook body as received) or, with body = "envelope", a
// JSON object {"id", "source", "route", "received_at" (RFC 3339, UTC,
// nanoseconds), "attempt", "body", "payload" (only when the route has a
// transform)}. Every request carries webhook-id: the event id, the same on
// every redelivery, so the receiver can drop duplicates (delivery is at
// least once). With a secret it also carries webhook-timestamp (now, unix
// seconds) and webhook-signature ("v1,<base64 HMAC-SHA256 of
// id.timestamp.body>") as Standard Webhooks specifies; with several
// secrets, one signature per secret, space-separated.
//
// # Answers
//
//	2xx                      delivered
//	400, 413, 422            permanent (permanent_status): the event itself is refused (malformed, too large,
//	                         unprocessable), and sending it again unchanged cannot help
//	408, 429, 5xx            retry, after Retry-After when given (seconds or an HTTP date; at most 24h)
//	other 4xx                retry: 401, 403, 404, 405, 409, 410, 415, ...
//	3xx                      retry: redirects are not followed (secret headers must not travel);
//	                         the error names the Location: set url to it
//	network error, timeout   retry (the error shows scheme://host/path only)
//	no connection            retry for the event tried; the rest of the batch is not attempted
//	                         (refused, no route, no such host: every request would fail alike)
//	not sent in time         not attempted (sdk.NotAttempted): a request starts only while it
//	                         can end (timeout) 2 s before the call's deadline (with a timeout
//	                         longer than the call, while that moment is ahead, cut there); a
//	                         slow receiver gets the rest in the next batch, and those events
//	                         cost no attempt toward max_attempts
//	not sent after a 429,    not attempted, after that answer's delay (see below); none
//	a 502, 503 or 504        after a 502, 503 or 504 without Retry-After (the host then
//	                         waits backoff_min when nothing of the batch was delivered)
//
// Errors say the status and the first 200 bytes of the response. A status
// that is the same for every event (a credential expired or rotated: 401,
// 403; the endpoint moved or is gone: 3xx, 404, 410; a method or content type
// the receiver no longer takes: 405, 415) is an outage of the destination,
// not a fault of the event: retried, it opens the sink's breaker and the
// events wait for the fix, in order, instead of going to the dead-letter
// queue one by one.
//
// After a 429 the rest of the batch is not sent: it is answered not
// attempted with the same delay (only the event that got the 429 counts an
// attempt). So after a 503 with a Retry-After (the receiver said when it
// will be back), after a 502, 503 or 504 without one (a gateway with
// nothing behind it, a receiver down: about the receiver, not the event;
// a 500 may be about the event and is answered per event), and after a
// request that found no connection at all (not before backoff_min: the
// host holds a batch that delivered nothing back that long): each event
// sent would be refused too and cost an attempt toward max_attempts. The
// one request a call still counts its attempt, so the breaker opens after
// breaker_failures calls as before. After a restart, the breaker closed, that is
// a whole batch of a backlog a call, and a few such calls dead-letter it
// without the receiver having been up once. An event not sent because the
// host called the call off is answered not attempted too. With concurrency
// 1 events are sent in batch order, one at a time; with more, up to that
// many at once, each answered on its own.
type sink struct {
	log *slog.Logger

	// cfg and client are set by Configure; the host never calls two
	// methods at once, so they need no lock.
	cfg    settings
	client *http.Client
	safe   string // scheme://host/path of the URL, the only form logged
}

var (
	_ sdk.Sink      = (*sink)(nil)
	_ sdk.Closer    = (*sink)(nil)
	_ sdk.Describer = (*sink)(nil)
)

func newSink() *sink { return newSinkLogger(sdk.Logger()) }

func newSinkLogger(log *slog.Logger) *sink { return &sink{log: log} }

// Describe lists the sink's config keys.
func (s *sink) Describe() sdk.Description { return describe() }

// Configure decodes and validates the config and reads the secrets it
// names. It opens no connection.
func (s *sink) Configure(_ context.Context, raw json.RawMessage) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = cfg.maxIdleConns
	tr.MaxIdleConnsPerHost = cfg.maxIdleConns
	if cfg.tls != nil {
		tr.TLSClientConfig = cfg.tls
	}
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	s.cfg = cfg
	s.safe = safeURL(cfg.url)
	s.client = &http.Client{
		Transport: tr,
		// Redirects are answered, not followed: a secret header must not
		// follow the request to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.log.Info("http sink configured", "url", s.safe, "method", cfg.method,
		"envelope", cfg.envelope, "signatures", len(cfg.signers), "client_cert", cfg.tls != nil && len(cfg.tls.Certificates) > 0, "concurrency", cfg.concurrency,
		"permanent_status", slices.Sorted(maps.Keys(cfg.permanent)))
	return nil
}

// Close drops idle connections.
func (s *sink) Close(context.Context) error {
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	return nil
}

// Deliver sends each event of the batch and answers per event.
func (s *sink) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	if s.client == nil {
		return nil, errors.New("http sink: Deliver before Configure")
	}
	results := make([]sdk.Result, len(batch))
	sctx, inTime, cancel := s.window(ctx)
	defer cancel()
	if s.cfg.concurrency <= 1 {
		for i, ev := range batch {
			if ctx.Err() != nil { // the host wrapped the call up (sdk.ErrWrapUp), or gave up on it
				fill(results[i:], sdk.NotAttempted(0, fmt.Errorf("not sent: %w", context.Cause(ctx))))
				break
			}
			if i > 0 && !inTime() {
				s.notInTime(results[i:], i)
				break
			}
			r, why := s.send(sctx, ev)
			results[i] = r
			if why != "" {
				s.skipRest(results[i+1:], r, why, ev.ID)
				break
			}
		}
		return results, nil
	}

	// Up to concurrency requests at once. After a 429 (or any answer that
	// halts the batch) no new request starts; those in flight finish and
	// answer for themselves.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		halt  *sdk.Result // the first answer that halts the batch
		haltW halted      // why it does
		haltI string      // its event id
	)
	sem := make(chan struct{}, s.cfg.concurrency)
	sent := make([]bool, len(batch))
loop:
	for i, ev := range batch {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		mu.Lock()
		stop := halt != nil
		mu.Unlock()
		if stop || i > 0 && !inTime() {
			<-sem
			break
		}
		sent[i] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, why := s.send(sctx, ev)
			results[i] = r
			if why != "" {
				mu.Lock()
				if halt == nil {
					halt, haltW, haltI = &r, why, ev.ID
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// The loop stopped at the first event it did not send: the rest, one
	// answer and one log line for them all.
	first := slices.Index(sent, false)
	if first < 0 {
		return results, nil
	}
	switch rest := results[first:]; {
	case halt != nil:
		s.skipRest(rest, *halt, haltW, haltI)
	case ctx.Err() != nil:
		fill(rest, sdk.NotAttempted(0, fmt.Errorf("not sent: %w", context.Cause(ctx))))
	default:
		s.notInTime(rest, first)
	}
	return results, nil
}

// answerReserve is the part of a Deliver call's time kept for its answer
// to reach the host: a request starts only if it can run for its whole
// timeout and still leave this much before the call's deadline.
const answerReserve = 2 * time.Second

// errNotInTime is the reason of the events of a batch that were not sent
// because the call would have outlasted its deadline (sdk.NotAttempted).
var errNotInTime = errors.New("not sent: the receiver answers too slowly for the whole batch to be sent within the call's time; sent in a later batch")

// window returns what the requests of one Deliver call are sent with: a
// ctx, and inTime, which reports whether a request may start now. A call
// that runs out of time (the host's limit on it, 60 s, less
// answerReserve) has none of its results recorded: every event of it,
// those the receiver took included, would be sent again, and with a
// receiver slow enough (over 120 ms a request for a batch of 500, one at a
// time) every call would, the queue never draining while the receiver got
// the same events again and again. So the sink stops in time and answers
// for what it sent; the rest goes in the next batch.
//
// A request starts only while it can run its whole timeout and end
// answerReserve before ctx's deadline, and is sent with ctx. When the
// timeout is longer than that from the start (a timeout of 60 s), no
// request would ever fit and each call would send one event: then
// requests start until answerReserve before the deadline, and are sent
// with a ctx that ends there (one cut short is retried, as a timeout is).
func (s *sink) window(ctx context.Context) (sctx context.Context, inTime func() bool, cancel context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return ctx, func() bool { return true }, func() {}
	}
	end := dl.Add(-answerReserve)
	if time.Until(end) >= s.cfg.timeout {
		return ctx, func() bool { return time.Until(end) >= s.cfg.timeout }, func() {}
	}
	sctx, cancel = context.WithDeadlineCause(ctx, end,
		fmt.Errorf("no answer %v before the call's deadline (timeout %v is longer than the call)", answerReserve, s.cfg.timeout))
	return sctx, func() bool { return sctx.Err() == nil }, cancel
}

// notInTime answers the events left when the call's time ran out, after
// sent events were sent.
func (s *sink) notInTime(rest []sdk.Result, sent int) {
	fill(rest, sdk.NotAttempted(0, errNotInTime))
	s.logNotInTime(sent, len(rest))
}

func (s *sink) logNotInTime(sent, notSent int) {
	s.log.Warn("http receiver slow: rest of the batch not sent within the call's time, it goes in a later batch (raise concurrency to send more at once)",
		"url", s.safe, "sent", sent, "not_sent", notSent, "concurrency", s.cfg.concurrency)
}

// halted is why an answer stops the rest of its batch from being sent,
// "" when it does not: each request after it would fail the same way and
// cost its event an attempt toward max_attempts.
type halted string

const (
	// throttled: a 429, or a 503 with a Retry-After; the receiver said
	// when to come back.
	throttled halted = "throttled"
	// unreachable: no connection could be made (refused, no route, no
	// such host); the receiver is down, not the event at fault.
	unreachable halted = "unreachable"
	// unavailable: a 502, 503 or 504 without a Retry-After (a gateway
	// with nothing behind it, a receiver down or overloaded); the answer
	// is about the receiver, not the event. A 500 may be about the event
	// and does not halt.
	unavailable halted = "unavailable"
)

// skipRest answers the events not sent after the answer by, which halted
// the batch for why on event id: not attempted, after the same delay.
func (s *sink) skipRest(rest []sdk.Result, by sdk.Result, why halted, id string) {
	if len(rest) == 0 {
		return
	}
	after, _ := by.IsRetry()
	s.log.Warn("http receiver "+string(why)+": rest of the batch not sent (not attempted: no attempt counted, sent in a later batch)", "url", s.safe,
		"event_id", id, "not_sent", len(rest), "retry_after", after.String(), "answer", by.Err().Error())
	fill(rest, sdk.NotAttempted(after, fmt.Errorf("not sent: %s for event %s earlier in the batch", by.Err(), id)))
}

func fill(rs []sdk.Result, r sdk.Result) {
	for i := range rs {
		rs[i] = r
	}
}

// errorExcerpt is how much of a failed response's body an error quotes.
const errorExcerpt = 200

// scrubWindow is how much of a failed response's body is read and scrubbed
// of secrets before errorExcerpt bytes of it are quoted.
const scrubWindow = 4 << 10

// send makes one request for ev and answers for it, and says why the
// answer halts the rest of the batch, if it does: a 429 or a 503 with a
// Retry-After (the rest waits that long), a 502, 503 or 504 without one,
// or no connection at all.
func (s *sink) send(ctx context.Context, ev sdk.Event) (r sdk.Result, why halted) {
	body, err := s.body(ev)
	if err != nil {
		return sdk.Permanent(err), ""
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.timeout,
		fmt.Errorf("no answer within timeout %v", s.cfg.timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, s.cfg.method, s.cfg.url.String(), bytes.NewReader(body))
	if err != nil {
		return sdk.Permanent(fmt.Errorf("build request to %s: %s", s.safe, s.scrub(err.Error()))), ""
	}
	for k, vs := range s.cfg.header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", s.cfg.contentType)
	req.Header.Set("User-Agent", "pipelined-sink-http")
	req.Header.Set("webhook-id", ev.ID)
	// The delivery attempt's trace context: the receiver's spans join the
	// event's trace (W3C Trace Context; empty when the host does not trace).
	for _, k := range [...]string{"traceparent", "tracestate"} {
		if v := ev.TraceContext[k]; v != "" {
			req.Header.Set(k, v)
		}
	}
	if len(s.cfg.signers) > 0 {
		// One signature per secret, space-separated in one header, as
		// Standard Webhooks allows: a receiver holding either the new or
		// the old secret verifies.
		now := time.Now()
		sigs := make([]string, 0, len(s.cfg.signers))
		for _, signer := range s.cfg.signers {
			sig, err := signer.Sign(ev.ID, now, body)
			if err != nil {
				return sdk.Permanent(errors.New("sign request: " + s.scrub(err.Error()))), ""
			}
			sigs = append(sigs, sig)
		}
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("webhook-signature", strings.Join(sigs, " "))
	}

	resp, err := s.client.Do(req)
	if err != nil {
		// Not when the call's ctx ended during the dial: the host called
		// the call off, or its time ran out (the rest is not sent anyway).
		if noConnection(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			why = unreachable
		}
		return sdk.Retry(0, s.requestError(ctx, err)), why
	}
	defer resp.Body.Close()
	// Read more than is quoted, so a secret the receiver echoes is
	// scrubbed whole before the excerpt is cut.
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, scrubWindow))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection reusable
	excerpt := s.excerpt(answer)

	code := resp.StatusCode
	status := fmt.Sprintf("%s %s answered %s", s.cfg.method, s.safe, statusText(code))
	switch {
	case code >= 200 && code < 300:
		return sdk.Delivered(), ""
	case s.cfg.permanent[code]:
		return sdk.Permanent(errors.New(status + withExcerpt(excerpt))), ""
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		after := retryAfter(resp.Header.Get("Retry-After"), time.Now())
		switch {
		case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable && after > 0:
			why = throttled // the receiver asked for a pause: the rest waits it out
		case code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
			why = unavailable // the receiver is down: every request would get the same
		}
		return sdk.Retry(after, errors.New(status+withExcerpt(excerpt))), why
	case code >= 300 && code < 400:
		loc := "no Location"
		if u, err := resp.Location(); err == nil {
			loc = "Location " + safeURL(u)
		}
		// The endpoint moved: the same for every event, so retried (the
		// breaker opens) until url is set to the final address.
		return sdk.Retry(0, fmt.Errorf("%s (%s): redirects are not followed; set url to the final address", status, loc)), ""
	default:
		// Every other answer (401, 403, 404, 409, 410, ...) is about the
		// receiver, the credentials or the config, not this event: retried
		// with the host's backoff, so that an outage opens the breaker.
		return sdk.Retry(0, errors.New(status+withExcerpt(excerpt))), ""
	}
}

// defaultPermanentStatus is permanent_status when the config does not set
// it: the statuses that refuse the event itself, so that sending it again
// unchanged cannot help (RFC 9110): 400 Bad Request (malformed), 413
// Content Too Large (the body) and 422 Unprocessable Content (well-formed,
// but its content refused). Every other 4xx and 5xx is about the receiver,
// the credentials or the sink's config (401, 403, 404, 405, 410, 414, 415,
// ...): the same for every event, so the whole queue would fail alike;
// they are retried, so that the breaker opens and the events wait for the
// fix instead of filling the dead-letter queue.
var defaultPermanentStatus = []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity}

// body builds the request body for ev.
func (s *sink) body(ev sdk.Event) ([]byte, error) {
	if !s.cfg.envelope {
		return ev.Payload(), nil
	}
	env := struct {
		ID         string          `json:"id"`
		Source     string          `json:"source"`
		Route      string          `json:"route"`
		ReceivedAt string          `json:"received_at"`
		Attempt    int             `json:"attempt"`
		Body       json.RawMessage `json:"body"`
		Payload    json.RawMessage `json:"payload,omitempty"`
	}{ev.ID, ev.Source, ev.Route, ev.ReceivedAt.UTC().Format(time.RFC3339Nano), ev.Attempt, ev.Body, ev.Transformed}
	if len(bytes.TrimSpace(env.Body)) == 0 {
		env.Body = json.RawMessage("null")
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("build envelope of event %s (body or payload is not JSON): %w", ev.ID, err)
	}
	return b, nil
}

// noConnection reports whether err (of http.Client.Do) is a failure to
// connect at all: refused, no route, no such host. A receiver that cannot
// be reached refuses every event alike.
func noConnection(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// errCutShort is the error of a request in flight when the daemon wrapped
// the call up (sdk.ErrWrapUp): retried, as the receiver may have the event.
const errCutShort = "cut short: the daemon is stopping and the receiver had not answered"

// requestError describes a failed request without the URL's secret parts:
// a *url.Error quotes the whole URL, query and userinfo included.
func (s *sink) requestError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	ended := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
	switch cause := context.Cause(ctx); {
	case errors.Is(err, sdk.ErrWrapUp), ended && errors.Is(cause, sdk.ErrWrapUp):
		// What happened, for events show and the daemon's log: the request
		// was sent, and may have arrived (retried). (net/http returns the
		// ctx's cause itself, or context.Canceled.)
		msg = errCutShort
	case ended && cause != nil:
		msg = cause.Error()
	}
	return fmt.Errorf("%s %s: %s", s.cfg.method, s.safe, s.scrub(msg))
}

// scrub removes every secret value the sink knows of from msg: header_env
// values, signing secrets, the URL's query values and password, as written
// and in the escaped forms a receiver echoing its request may use.
func (s *sink) scrub(msg string) string {
	if s.cfg.url != nil {
		msg = strings.ReplaceAll(msg, s.cfg.url.String(), s.safe)
	}
	for _, v := range s.cfg.secretValues {
		if len(v) < minSecret {
			continue
		}
		for _, form := range secretForms(v) {
			msg = strings.ReplaceAll(msg, form, "[REDACTED]")
		}
	}
	return msg
}

// minSecret is the shortest value scrub looks for; shorter ones would
// redact ordinary words.
const minSecret = 4

// secretForms is v as written and as a receiver may echo it: URL-escaped
// (query or path) and JSON-escaped.
func secretForms(v string) []string {
	forms := []string{v}
	j, _ := json.Marshal(v)
	for _, f := range []string{url.QueryEscape(v), url.PathEscape(v), strings.Trim(string(j), `"`)} {
		if !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	return forms
}

// excerpt is the start of a failed response's body, scrubbed of secrets
// and cut to errorExcerpt bytes; a cut that leaves the start of a secret at
// the end drops that start too.
func (s *sink) excerpt(answer []byte) []byte {
	cut := len(answer) >= scrubWindow // the read may have cut a secret too
	b := []byte(s.scrub(string(answer)))
	if len(b) > errorExcerpt {
		b, cut = b[:errorExcerpt], true
	}
	if !cut {
		return b
	}
	for _, v := range s.cfg.secretValues {
		if len(v) < minSecret {
			continue
		}
		for _, form := range secretForms(v) {
			for n := min(len(form)-1, len(b)); n >= 1; n-- {
				if bytes.HasSuffix(b, []byte(form[:n])) {
					b = b[:len(b)-n]
					break
				}
			}
		}
	}
	return b
}

// safeURL is the only form of a URL that is logged: scheme://host/path,
// without userinfo, query or fragment.
func safeURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return strconv.Itoa(code) + " " + t
	}
	return strconv.Itoa(code)
}

// withExcerpt formats the start of a response body for an error.
func withExcerpt(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return ""
	}
	for !utf8.Valid(b) && len(b) > 0 { // don't cut a rune in half
		b = b[:len(b)-1]
	}
	return fmt.Sprintf(": %q", b)
}

// retryAfter is the wait a Retry-After header asks for (seconds or an
// HTTP date), at most [retryafter.Cap]; 0 (the host's own backoff) when
// absent or invalid.
func retryAfter(v string, now time.Time) time.Duration {
	d, _ := retryafter.Parse(v, now, retryafter.Cap)
	return d
}
