package ingest_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/telemetry"
)

// TestURLTokenNeverWritten: a url-token source accepts the request whose
// URL holds its token and refuses the others with 401 and a reason that
// says which; and neither the token nor a wrong one that was sent shows in
// the answers, the log lines, the kept rejections, the stored event's
// headers (a proxy's X-Forwarded-Uri holds the URL), the spans or the
// metrics. The other query parameters stay in the forwarded URL.
func TestURLTokenNeverWritten(t *testing.T) {
	const (
		token = "u7-live-token-4c1e9a"
		old   = "u7-older-token-88d0f2"
		wrong = "u7-guessed-token-0b3f"
	)
	spec := auth.Spec{Type: auth.TypeURLToken, Param: "token", Secrets: [][]byte{[]byte(token), []byte(old)}}
	v, err := auth.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	rlog := memlog.New()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	audit := ingest.NewAudit(rlog, &ingest.AuditOptions{Metrics: m, Queue: 64})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	src := ingest.Source{Name: "callkaro", Path: hookPath, Verifier: v, KeepRejected: time.Hour, Redactor: auth.NewRedactor(spec)}
	logs := &testlog.Buffer{}
	app := &recordingAppender{}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20, Audit: audit, Metrics: m,
		Tracing: telemetry.NewWithProvider(tp), LogRequests: true}, app, slog.New(slog.NewJSONHandler(logs, nil)))

	var answers strings.Builder
	for i, c := range []struct {
		query      string
		want       int
		wantReason string
		original   string // X-Original-URL, when not ""
	}{
		{"agent=7&token=" + token, http.StatusOK, "", ""},
		{"token=" + old + "&agent=8", http.StatusOK, "", ""},
		{"", http.StatusUnauthorized, "missing token: the URL has no token query parameter", ""},
		{"agent=7", http.StatusUnauthorized, "missing token: the URL has no token query parameter", ""},
		{"token=" + wrong, http.StatusUnauthorized, "invalid token in the token query parameter", ""},
		{"token=" + wrong + "&token=" + token, http.StatusUnauthorized, "multiple token query parameters in the URL", ""},
		// A value that is no token under another name is not redacted
		// (below); a configured token is, under any name and however
		// encoded.
		{"key=u7-misplaced", http.StatusUnauthorized, "missing token: the URL has no token query parameter", ""},
		{"key=" + token, http.StatusUnauthorized, "missing token: the URL has no token query parameter", ""},
		{"agent=9&token=" + old, http.StatusOK, "", "/login?next=%2Fhooks%2Fcallkaro%3Fkey%3D" + strings.Replace(token, "live", "%256cive", 1)},
		{"%74oken=" + strings.Replace(old, "older", "%6f%6C%64er", 1), http.StatusOK, "", ""},
		// A token in a path no source has: the 404's reason, its log
		// line and its span quote the path.
		{"!path /hooks/callkaro&token=" + token, http.StatusNotFound, "", ""},
		{"!path /hooks/callkaro%3Ftoken%3D" + token, http.StatusNotFound, "", ""},
		// A token in a Content-Type (the 415's reason quotes it), and in
		// the sender's tracestate (stored with the event, sent on).
		{"!type text/plain; x=" + token, http.StatusUnsupportedMediaType, "", ""},
		{"!tracestate vendor=" + token + "&agent=10&token=" + token, http.StatusOK, "", ""},
	} {
		target := hookPath
		contentType, traceState := "application/json", ""
		switch kind, arg, _ := strings.Cut(c.query, " "); kind {
		case "!path":
			target = arg
		case "!type":
			contentType = arg
		case "!tracestate":
			vendor, query, _ := strings.Cut(arg, "&")
			target, traceState = hookPath+"?"+query, vendor
		default:
			if c.query != "" {
				target += "?" + c.query
			}
		}
		// A callSid of its own each: no duplicate hides a request.
		req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(callKaroWith(t, fmt.Sprint("sid-", i))))
		req.Header.Set("Content-Type", contentType)
		if traceState != "" {
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			req.Header.Set("Tracestate", traceState)
		}
		req.Header.Set("X-Forwarded-Uri", target)
		req.Header.Set("Referer", "https://callkaro.example"+target)
		if c.original != "" {
			req.Header.Set("X-Original-URL", c.original)
		}
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req)
		answers.WriteString(rr.Body.String())
		if rr.Code != c.want {
			t.Errorf("POST ?%s = %d %s, want %d", c.query, rr.Code, rr.Body, c.want)
			continue
		}
		if c.wantReason != "" {
			var eb struct{ Error string }
			if err := json.Unmarshal(rr.Body.Bytes(), &eb); err != nil || eb.Error != c.wantReason {
				t.Errorf("POST ?%s answered %s, want error %q", c.query, rr.Body, c.wantReason)
			}
		}
	}
	if err := audit.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	tp.ForceFlush(context.Background())

	// The accepted events keep the forwarded URL with the token redacted
	// and the other parameters as they were.
	if len(app.entries) != 5 {
		t.Fatalf("%d events appended, want 5", len(app.entries))
	}
	for i, want := range []string{"/hooks/callkaro?agent=7&token=REDACTED", "/hooks/callkaro?token=REDACTED&agent=8",
		"/hooks/callkaro?agent=9&token=REDACTED", "/hooks/callkaro?%74oken=REDACTED", "/hooks/callkaro?agent=10&token=REDACTED"} {
		e := app.entries[i].Event
		if got := e.Headers["x-forwarded-uri"]; got != want {
			t.Errorf("event %d x-forwarded-uri = %q, want %q", i, got, want)
		}
		if e.Auth != "url-token" {
			t.Errorf("event %d auth = %q, want url-token", i, e.Auth)
		}
	}
	if got, want := app.entries[4].Event.TraceState, "vendor=REDACTED"; got != want {
		t.Errorf("event 4 TraceState = %q, want %q", got, want)
	}
	if got, want := app.entries[2].Event.Headers["x-original-url"], "/login?next=%2Fhooks%2Fcallkaro%3Fkey%3DREDACTED"; got != want {
		t.Errorf("event 2 x-original-url = %q, want %q", got, want)
	}
	events, _ := json.Marshal(app.entries)

	kept, _, err := rlog.Rejections(context.Background(), pipeline.RejectionFilter{Source: "callkaro"})
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 7 {
		t.Fatalf("%d rejections kept, want 7 (the 401s and the 415; a 404 has no source to keep it)", len(kept))
	}
	rejections, _ := json.Marshal(kept)
	if !strings.Contains(string(rejections), "token=REDACTED") {
		t.Errorf("kept rejections %s: want the forwarded URL with token=REDACTED", rejections)
	}

	var spans strings.Builder
	for _, s := range rec.Ended() {
		fmt.Fprintf(&spans, "%s %v\n", s.Name(), s.Attributes())
	}
	if !strings.Contains(spans.String(), "url.path") {
		t.Fatalf("spans %s: want the request spans with url.path", spans.String())
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) == 0 {
		t.Fatalf("Gather() = %d families, %v", len(mfs), err)
	}
	exposition := fmt.Sprint(mfs)

	for what, out := range map[string]string{
		"answers": answers.String(), "log lines": logs.String(), "stored events": string(events),
		"kept rejections": string(rejections), "spans": spans.String(), "metrics": exposition,
	} {
		for _, tok := range []string{token, old, wrong} {
			if holdsToken(out, tok) {
				t.Errorf("the %s hold a token sent in the URL (%s):\n%s", what, tok, out)
			}
		}
	}
	if !strings.Contains(logs.String(), "missing token") {
		t.Errorf("log lines %s: want the refusals' reasons", logs.String())
	}
}

// FuzzURLTokenSource fuzzes the query string of a request to a url-token
// source and a header that a proxy copies the URL into: a request is
// accepted exactly when the token parameter appears once and unescapes to
// the token, and neither the stored event's headers nor the kept
// rejection's hold the token, under any name, as it is or percent-encoded
// (up to auth.RedactDecodes times over), nor a token parameter with it.
func FuzzURLTokenSource(f *testing.F) {
	const token = "fz-url-token-31c7"
	f.Add("token="+token, "/hooks/callkaro?token="+token)
	f.Add("a=1&token="+token+"&b=2", "https://h.example/hooks/callkaro?a=1&token="+token+"#x")
	f.Add("token="+token+"&token="+token, "token="+token+";token="+token)
	f.Add("%74oken="+token, "?%74oken="+token)
	f.Add("", "")
	f.Add("token=%zz", "token")
	f.Add("key="+token, "/hooks/callkaro?key="+token)
	f.Add("token="+token, "/login?next=%2Fhooks%3Fk%3D"+strings.ReplaceAll(token, "-", "%252d"))
	spec := auth.Spec{Type: auth.TypeURLToken, Param: "token", Secrets: [][]byte{[]byte(token)}}
	v, err := auth.New(spec)
	if err != nil {
		f.Fatal(err)
	}
	cfg := ingest.Config{MaxBody: 1 << 20}
	src := &ingest.Source{Name: "callkaro", Path: hookPath, Verifier: v, KeepRejected: time.Hour, Redactor: auth.NewRedactor(spec)}
	body := []byte(`{"event":"call_ended"}`)
	f.Fuzz(func(t *testing.T, query, fwd string) {
		h := http.Header{"Content-Type": {"application/json"}, "X-Forwarded-Uri": {fwd}}
		d := cfg.Decide(src, ingest.Request{Header: h, Body: bytes.NewReader(body), ContentLength: int64(len(body)),
			Query: query, ReceivedAt: time.Now(), ID: "fz"})
		// The spec: exactly one parameter named token (a malformed value
		// counts too: two were sent, which is ambiguous), whose value
		// unescapes to the token; the others are not looked at.
		n, valid := 0, false
		for part := range strings.SplitSeq(query, "&") {
			name, pv, _ := strings.Cut(part, "=")
			if un, err := url.QueryUnescape(name); name == "token" || err == nil && un == "token" {
				n++
				got, err := url.QueryUnescape(pv)
				valid = err == nil && got == token
			}
		}
		valid = valid && n == 1
		if d.Accepted() != valid {
			t.Fatalf("query %q: accepted = %v (%d %s), want %v", query, d.Accepted(), d.Status, d.Error, valid)
		}
		stored := d.Entry.Event.Headers
		if d.Rejection != nil {
			stored = d.Rejection.Headers
		}
		if strings.Contains(d.Error, token) {
			t.Fatalf("reason %q holds the token", d.Error)
		}
		for k, val := range stored {
			if holdsToken(val, token) {
				t.Fatalf("stored header %s = %q holds the token (sent %q)", k, val, fwd)
			}
			for part := range strings.FieldsFuncSeq(val, func(c rune) bool { return c == '&' || c == '?' || c == ';' }) {
				name, pv, _ := strings.Cut(part, "=")
				if un, err := url.QueryUnescape(name); (name == "token" || err == nil && un == "token") && strings.Contains(pv, token) {
					t.Fatalf("stored header %s = %q holds the token (sent %q)", k, val, fwd)
				}
			}
		}
	})
}

var escapeRE = regexp.MustCompile(`%[0-9a-fA-F]{2}`)

// holdsToken reports whether s holds tok, as it is or percent-encoded, in
// part or whole, up to auth.RedactDecodes times over.
func holdsToken(s, tok string) bool {
	for range auth.RedactDecodes + 1 {
		if strings.Contains(s, tok) {
			return true
		}
		s = escapeRE.ReplaceAllStringFunc(s, func(e string) string {
			b, _ := hex.DecodeString(e[1:])
			return string(b)
		})
	}
	return false
}

// TestURLTokenNotInTheDedupKey: a dedup_key over a header that holds the
// URL is made from the redacted header, also when another header is not
// UTF-8 (the key is then made from the headers' bytes) and when the
// header came on two lines; so is the stored header.
func TestURLTokenNotInTheDedupKey(t *testing.T) {
	const token = "dk-url-token-5e21a9"
	spec := auth.Spec{Type: auth.TypeURLToken, Param: "token", Secrets: [][]byte{[]byte(token)}}
	v, err := auth.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	dedup, err := rules.CompileValue(`headers["x-forwarded-uri"]`)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ingest.Config{MaxBody: 1 << 20}
	src := &ingest.Source{Name: "callkaro", Path: hookPath, Verifier: v, Redactor: auth.NewRedactor(spec), DedupKey: dedup, DedupWindow: time.Hour}
	body := []byte(`{"event":"call_ended"}`)
	for _, c := range []struct {
		name string
		h    http.Header
	}{
		{"one line", http.Header{"X-Forwarded-Uri": {"/hooks/callkaro?key=" + token}}},
		{"a header not UTF-8 beside it", http.Header{"X-Forwarded-Uri": {"/hooks/callkaro?key=" + token}, "X-Name": {"M\xfcller"}}},
		{"on two lines", http.Header{"X-Forwarded-Uri": {"/hooks/callkaro?a=1", "/hooks/callkaro?key=" + token}}},
		{"on two lines, a header not UTF-8 beside it", http.Header{"X-Forwarded-Uri": {"/x", "/hooks/callkaro?key=" + token}, "X-Name": {"M\xfcller"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.h.Set("Content-Type", "application/json")
			d := cfg.Decide(src, ingest.Request{Header: c.h, Body: bytes.NewReader(body), ContentLength: int64(len(body)),
				Query: "token=" + token, ReceivedAt: time.Now(), ID: "dk"})
			if !d.Accepted() {
				t.Fatalf("not accepted: %d %s", d.Status, d.Error)
			}
			if d.Entry.DedupKey == "" || holdsToken(d.Entry.DedupKey, token) {
				t.Errorf("dedup key %q: want the forwarded URL with the token redacted", d.Entry.DedupKey)
			}
			if got := d.Entry.Event.Headers["x-forwarded-uri"]; holdsToken(got, token) || !strings.Contains(got, "REDACTED") {
				t.Errorf("stored x-forwarded-uri %q: want the token redacted", got)
			}
		})
	}
}
