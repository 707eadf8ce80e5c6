package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/auth"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
	"github.com/pipelined/pipelined/pipeline/ingest"
	"github.com/pipelined/pipelined/pipeline/metrics"
	"github.com/pipelined/pipelined/pipeline/rules"
	"github.com/pipelined/pipelined/pipeline/writer"
)

// TestRejectedFloodBounded: a flood of 401s with 61 KiB of headers each,
// on a source with keep_rejected, keeps at most keep_rejected_max bytes of
// them (the newest), cuts each one's headers to 8 KiB, counts what it
// dropped, and logs a handful of lines, not one per request.
func TestRejectedFloodBounded(t *testing.T) {
	db, err := badgerlog.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := metrics.New(nil)
	audit := ingest.NewAudit(db, &ingest.AuditOptions{Metrics: m, Queue: 4096})
	v, err := auth.New(auth.Spec{Type: "bearer", Secrets: [][]byte{[]byte("s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	const max = 256 << 10
	src := ingest.Source{Name: "flood", Path: "/hooks/flood", Verifier: v, KeepRejected: time.Hour, KeepRejectedMax: max}
	logs := &testlog.Buffer{}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20, Audit: audit, Metrics: m},
		&recordingAppender{}, slog.New(slog.NewJSONHandler(logs, nil)))

	const n = 400
	filler := strings.Repeat("x", 3<<10)
	for i := range n {
		req := httptest.NewRequest(http.MethodPost, "/hooks/flood", strings.NewReader(`{"n":1}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer wrong")
		req.Header.Set("X-Seq", fmt.Sprint(i))
		for j := range 20 {
			req.Header.Set(fmt.Sprintf("X-Fill-%02d", j), filler) // 20 x 3 KiB = 61 KiB with the rest
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("POST %d with a wrong token = %d, want 401", i, rec.Code)
		}
	}
	if err := audit.Close(context.Background()); err != nil {
		t.Fatalf("Audit.Close = %v", err)
	}

	var kept []pipeline.Rejection
	for f := (pipeline.RejectionFilter{Source: "flood"}); ; {
		rs, next, err := db.Rejections(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, rs...)
		if next == "" {
			break
		}
		f.After = next
	}
	if len(kept) == 0 || len(kept) >= n {
		t.Fatalf("kept %d of %d rejections, want some but not all (keep_rejected_max = %d)", len(kept), n, max)
	}
	var size int64
	for _, r := range kept {
		size += r.Size()
		hb := 0
		for k, v := range r.Headers {
			hb += len(k) + len(v)
		}
		if hb > ingest.MaxRejectedHeaders {
			t.Errorf("rejection %s keeps %d bytes of headers, want at most %d", r.ID, hb, ingest.MaxRejectedHeaders)
		}
		if r.Headers["x-seq"] == "" || r.Headers["x-pipelined-headers-cut"] == "" {
			t.Errorf("rejection %s headers %v: want x-seq kept and x-pipelined-headers-cut naming what was cut", r.ID, keys(r.Headers))
		}
	}
	if size > max {
		t.Errorf("kept %d bytes of rejections, want at most keep_rejected_max = %d", size, max)
	}
	if last := kept[len(kept)-1].Headers["x-seq"]; last != fmt.Sprint(n-1) {
		t.Errorf("newest kept rejection is x-seq %s, want %d: the oldest go first", last, n-1)
	}
	evicted := metricValue(t, m, `pipelined_rejections_evicted_total{source="flood"}`)
	if evicted != fmt.Sprint(n-len(kept)) {
		t.Errorf("pipelined_rejections_evicted_total = %s, want %d (%d refused, %d kept)", evicted, n-len(kept), n, len(kept))
	}
	if lines := logs.Lines(t, "webhook refused"); len(lines) > 10 {
		t.Errorf("%d 401s logged %d lines, want a handful (rate-limited per source and reason)", n, len(lines))
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// metricValue returns the value of the series named by line's start in
// m's exposition, or "" when it is absent.
func metricValue(t *testing.T, m *metrics.Metrics, series string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, l := range bytes.Split(body, []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte(series+" ")); ok {
			return string(v)
		}
	}
	return ""
}

// TestSlowStrangersKeepNoSlots: with max_concurrent = 2, twenty
// unauthenticated connections sending their bodies slowly do not take the
// slots: a request with the right token, sent meanwhile, is accepted.
func TestSlowStrangersKeepNoSlots(t *testing.T) {
	v, err := auth.New(auth.Spec{Type: "bearer", Secrets: [][]byte{[]byte("s3cret")}})
	if err != nil {
		t.Fatal(err)
	}
	h := ingest.New(ingest.Config{
		Sources:       []ingest.Source{{Name: "guarded", Path: "/hooks/guarded", Verifier: v}},
		MaxBody:       1 << 20,
		MaxConcurrent: 2,
	}, &recordingAppender{}, nil)
	var entered atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()

	const strangers = 20
	for range strangers {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Headers whole, then a first byte of a body of 1000: the handler
		// waits for the rest.
		fmt.Fprintf(c, "POST /hooks/guarded HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nAuthorization: Bearer wrong\r\n\r\n{")
	}
	deadline := time.Now().Add(5 * time.Second)
	for entered.Load() < strangers {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d slow strangers reached the handler after 5s", entered.Load(), strangers)
		}
		time.Sleep(10 * time.Millisecond)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hooks/guarded", strings.NewReader(`{"ok":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("authenticated POST with %d slow strangers in flight and max_concurrent 2 = %d %s, want 200", strangers, resp.StatusCode, body)
	}
}

// TestDeepBodyRefused: a body nested deeper than ingest.MaxDepth is
// answered 400 and not stored, whatever its size; one at the limit is
// accepted, and what is stored encodes for the admin API.
func TestDeepBodyRefused(t *testing.T) {
	nest := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
	for _, c := range []struct {
		name string
		body string
		want int
	}{
		{"at the limit", nest(ingest.MaxDepth), http.StatusOK},
		{"one deeper", nest(ingest.MaxDepth + 1), http.StatusBadRequest},
		{"9999 deep arrays", strings.Repeat("[", 9999) + strings.Repeat("]", 9999), http.StatusBadRequest},
		{"too deep and not JSON", strings.Repeat("[", ingest.MaxDepth+1), http.StatusBadRequest},
		{"brackets in strings do not count", `{"s":"` + strings.Repeat("[{", 500) + `"}`, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			app := &recordingAppender{}
			h := ingest.New(ingest.Config{Sources: []ingest.Source{{Name: "s", Path: "/hooks/s"}}, MaxBody: 1 << 20}, app, nil)
			req := httptest.NewRequest(http.MethodPost, "/hooks/s", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("POST %d-byte body = %d %s, want %d", len(c.body), rec.Code, rec.Body, c.want)
			}
			if c.want != http.StatusOK {
				if app.len() != 0 || !strings.Contains(rec.Body.String(), "nests") {
					t.Errorf("refused body: %d appended, answer %s; want none appended and a reason naming the nesting", app.len(), rec.Body)
				}
				return
			}
			// What is stored encodes inside the admin API's envelope.
			if _, err := json.Marshal(map[string]any{"events": []any{map[string]json.RawMessage{"body": app.entries[0].Event.Body}}}); err != nil {
				t.Errorf("stored body does not encode: %v", err)
			}
		})
	}
}

// TestDuplicateKeysRefused: a body with a key twice in one object, at any
// depth and however the key is spelled, is refused with 400 naming the key
// and the source's switch, and nothing is appended; with
// allow_duplicate_keys it is taken as sent, and rules see the last value.
func TestDuplicateKeysRefused(t *testing.T) {
	for _, c := range []struct {
		name, body string
		allow      bool
		want       int
		key        string
	}{
		{"top level", `{"event":"call_ended","data":{},"event":"x"}`, false, http.StatusBadRequest, `"event"`},
		{"nested", `{"event":"call_ended","data":{"callSid":"a","from":1,"callSid":"b"}}`, false, http.StatusBadRequest, `"callSid"`},
		{"in an array", `[{"a":1},{"b":1,"b":1}]`, false, http.StatusBadRequest, `"b"`},
		{"escaped spelling", `{"a":1,"\u0061":2}`, false, http.StatusBadRequest, `"a"`},
		{"empty key", `{"":1,"":2}`, false, http.StatusBadRequest, `""`},
		{"invalid UTF-8, one key once decoded", "{\"\xff\":1,\"\xfe\":2}", false, http.StatusBadRequest, "\"\ufffd\" (invalid UTF-8 read as U+FFFD)"},
		{"same key in two objects", `{"a":{"k":1},"b":{"k":2}}`, false, http.StatusOK, ""},
		{"allowed", `{"event":"call_ended","data":{"callSid":"a","callSid":"b"}}`, true, http.StatusOK, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dedup, err := rules.CompileValue("body.data?.callSid")
			if err != nil {
				t.Fatal(err)
			}
			app := &recordingAppender{}
			src := ingest.Source{Name: "s", Path: "/hooks/s", DedupKey: dedup, DedupWindow: time.Hour, AllowDuplicateKeys: c.allow}
			h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20}, app, nil)
			req := httptest.NewRequest(http.MethodPost, "/hooks/s", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("POST %s = %d %s, want %d", c.body, rec.Code, rec.Body, c.want)
			}
			if c.want != http.StatusOK {
				var answer struct{ Error string }
				json.Unmarshal(rec.Body.Bytes(), &answer)
				want := "body has the key " + c.key + " twice in one object"
				if app.len() != 0 || !strings.HasPrefix(answer.Error, want) || !strings.HasSuffix(answer.Error, `allow_duplicate_keys = true on source "s")`) {
					t.Errorf("refused body: %d appended, answer %s; want none appended and a reason with %q and the switch", app.len(), rec.Body, want)
				}
				return
			}
			if app.len() != 1 || string(app.entries[0].Event.Body) != c.body {
				t.Fatalf("accepted body: %d appended, want 1 stored as sent", app.len())
			}
			if c.allow {
				if got := app.entries[0].DedupKey; got != "b" {
					t.Errorf("dedup key = %q, want the last value, %q", got, "b")
				}
			}
		})
	}
}

// FuzzDepth: for any valid JSON text, Depth agrees with encoding/json's
// tokens.
func FuzzDepth(f *testing.F) {
	for _, s := range []string{`1`, `[]`, `{"a":[1,{"b":"]"}]}`, `"\\\""`, `[[["\\"]]]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			ingest.Depth(b) // must not panic
			return
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		depth, want := 0, 0
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			if d, ok := tok.(json.Delim); ok {
				if d == '[' || d == '{' {
					depth++
					want = max(want, depth)
				} else {
					depth--
				}
			}
		}
		if got := ingest.Depth(b); got != want {
			t.Errorf("Depth(%q) = %d, want %d", b, got, want)
		}
	})
}

// TestPathMatchedRaw: a request reaches a source only through the path as
// configured, spelled the usual way: other spellings of it are 404, and an
// escaped "/" is 400.
func TestPathMatchedRaw(t *testing.T) {
	app := &recordingAppender{}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{
		{Name: "hm", Path: "/hooks/hm"},
		{Name: "cafe", Path: "/hooks/café"},
	}, MaxBody: 1 << 20}, app, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, c := range []struct {
		path string
		want int
	}{
		{"/hooks/hm", http.StatusOK}, // the premise: the source takes requests
		{"/hooks/caf%C3%A9", http.StatusOK},
		{"/hooks%2fhm", http.StatusBadRequest},
		{"/hooks%2Fhm", http.StatusBadRequest},
		{"/hooks/%68m", http.StatusNotFound},
		{"/hooks/h%6D", http.StatusNotFound},
		{"/%68ooks/hm", http.StatusNotFound},
		{"/hooks/caf%c3%a9", http.StatusNotFound},
		{"/hooks//hm", http.StatusNotFound},
		{"/hooks/./hm", http.StatusNotFound},
	} {
		t.Run(c.path, func(t *testing.T) {
			before := app.len()
			req, err := http.NewRequest(http.MethodPost, srv.URL+c.path, strings.NewReader(`{"n":1}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("POST %s = %d %s, want %d", c.path, resp.StatusCode, body, c.want)
			}
			if appended := app.len() - before; (c.want == http.StatusOK) != (appended == 1) {
				t.Errorf("POST %s appended %d events", c.path, appended)
			}
		})
	}
}

// FuzzRequestPath: no request path with an escaped "/" is matched, and a
// path that matches a source's key unescapes to exactly the source's path.
func FuzzRequestPath(f *testing.F) {
	for _, s := range []string{"/hooks/hm", "/hooks%2fhm", "/hooks/%68m", "/hooks/caf%C3%A9", "/a%2Fb", "/%", "/hooks/hm?x=%2f"} {
		f.Add(s)
	}
	keys := map[string]string{ingest.PathKey("/hooks/hm"): "/hooks/hm", ingest.PathKey("/hooks/café"): "/hooks/café", ingest.PathKey("/a/b"): "/a/b"}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.ParseRequestURI(s)
		if err != nil {
			return
		}
		p, err := ingest.RequestPath(u)
		if err != nil {
			return
		}
		if strings.Contains(strings.ToLower(p), "%2f") {
			t.Errorf("RequestPath(%q) = %q, nil: an escaped / got through", s, p)
		}
		if want, ok := keys[p]; ok && u.Path != want {
			t.Errorf("RequestPath(%q) = %q, the key of %q, but the path unescapes to %q", s, p, want, u.Path)
		}
	})
}

// TestOversizedBodyGets413: a sender that writes its whole body, three
// times max_body, before it reads the answer (Python's urllib, most SDKs)
// reads a 413, not a reset connection, whether it declared the length or
// sent it chunked.
func TestOversizedBodyGets413(t *testing.T) {
	const maxBody = 2 << 20
	h := ingest.New(ingest.Config{Sources: []ingest.Source{{Name: "s", Path: "/hooks/s"}}, MaxBody: maxBody}, &recordingAppender{}, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := `{"pad":"` + strings.Repeat("x", 3*maxBody) + `"}`
	for _, c := range []struct {
		name    string
		request string
	}{
		{"content-length", fmt.Sprintf("POST /hooks/s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)},
		{"chunked", fmt.Sprintf("POST /hooks/s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, c.request); err != nil {
				t.Fatalf("writing a %d-byte body over max_body %d: %v, want it read and discarded", len(body), maxBody, err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("reading the answer after the whole body: %v, want a 413", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("answer = %d, want 413", resp.StatusCode)
			}
		})
	}
}

// TestSvixSpelledSource: a Standard Webhooks source takes a request signed
// by a Svix sender (svix-id, svix-timestamp, svix-signature), dedups it on
// svix-id, and refuses one that mixes both spellings with 401.
func TestSvixSpelledSource(t *testing.T) {
	v, err := auth.New(auth.Spec{Type: auth.TypeStandardWebhooks, Secrets: [][]byte{[]byte(whsecret)}})
	if err != nil {
		t.Fatal(err)
	}
	app := &recordingAppender{}
	h := ingest.New(ingest.Config{Sources: []ingest.Source{{Name: "clerk", Path: "/hooks/clerk", Verifier: v, DedupHeader: "webhook-id"}}, MaxBody: 1 << 20}, app, nil)
	body := []byte(`{"type":"user.created"}`)
	ts := time.Now().Unix()
	post := func(hs map[string]string) int {
		req := httptest.NewRequest(http.MethodPost, "/hooks/clerk", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hs {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	svix := map[string]string{"svix-id": "msg_svix", "svix-timestamp": fmt.Sprint(ts), "svix-signature": swSign("msg_svix", ts, body)}
	if got := post(svix); got != http.StatusOK {
		t.Fatalf("POST signed with svix-* headers = %d, want 200", got)
	}
	if app.len() != 1 {
		t.Fatalf("appended %d events, want 1", app.len())
	}
	if k := app.entries[0].DedupKey; k != "msg_svix" {
		t.Errorf("dedup key %q, want svix-id's value msg_svix", k)
	}
	both := map[string]string{"webhook-id": "msg_svix", "webhook-timestamp": fmt.Sprint(ts), "webhook-signature": swSign("msg_svix", ts, body)}
	for k, v := range svix {
		both[k] = v
	}
	if got := post(both); got != http.StatusUnauthorized {
		t.Errorf("POST with both webhook-* and svix-* headers = %d, want 401", got)
	}
}

// TestNotUTF8IsAccepted: the log keeps strings as UTF-8 and refuses
// anything else, but a request can bring other bytes into an event's
// strings: HTTP lets a header value carry bytes over 0x7f (a Latin-1
// User-Agent, say), a dedup_header is such a header, and a dedup_key
// expression can cut a string between the bytes of a character (expr
// slices strings by bytes). Each request is accepted over real HTTP into
// a real log, a header kept as JSON shows it (U+FFFD for each bad byte)
// and a dedup key as "(bytes)" and its bytes in hex (so that two keys that
// differ there stay two: TestDedupKeyOfAHeaderNotUTF8), rather than
// answered 503 for ever — together with every request that shared its
// commit.
func TestNotUTF8IsAccepted(t *testing.T) {
	cut, err := rules.CompileValue(`body.data.name[0:1]`) // "é": the first of its two bytes
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Replace(callKaro(t), []byte(`"name": "outbound"`), []byte(`"name": "\u00e9t\u00e9"`), 1)
	if bytes.Equal(body, callKaro(t)) {
		t.Fatal("the test's payload has no data.name to replace")
	}
	for _, tt := range []struct {
		name    string
		source  func(*ingest.Source)
		headers map[string]string
		check   func(t *testing.T, ev pipeline.Event)
	}{
		{"header", nil, map[string]string{"X-Agent": "caf\xe9 \xff"}, func(t *testing.T, ev pipeline.Event) {
			if got, want := ev.Headers["x-agent"], "caf\uFFFD \uFFFD"; got != want {
				t.Errorf("stored x-agent = %q, want %q", got, want)
			}
		}},
		{"dedup_header", func(s *ingest.Source) { s.DedupKey, s.DedupHeader = nil, "x-delivery" },
			map[string]string{"X-Delivery": "d\xe9j\xe0"}, func(t *testing.T, ev pipeline.Event) {
				if got, want := ev.DedupKey, "(bytes)64e96ae0"; got != want {
					t.Errorf("stored dedup key = %q, want %q", got, want)
				}
			}},
		{"dedup_key cut", func(s *ingest.Source) { s.DedupKey = cut }, nil, func(t *testing.T, ev pipeline.Event) {
			if got, want := ev.DedupKey, "(bytes)c3"; got != want {
				t.Errorf("stored dedup key = %q, want %q", got, want)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, err := badgerlog.Open(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			w := writer.New(db, nil)
			defer w.Close()
			cfg := testConfig(t)
			if tt.source != nil {
				tt.source(&cfg.Sources[0])
			}
			f := &fixture{srv: httptest.NewServer(ingest.New(cfg, w, nil))}
			defer f.srv.Close()

			resp := f.do(t, request{contentType: "application/json", body: body, headers: tt.headers}) // net/http sends the bytes as they are
			if resp.code != http.StatusOK {
				t.Fatalf("POST = %d %s, want 200", resp.code, resp.body)
			}
			var ans struct{ ID string }
			if err := json.Unmarshal(resp.body, &ans); err != nil || ans.ID == "" {
				t.Fatalf("answer %s: want an id (%v)", resp.body, err)
			}
			ev, err := db.Event(context.Background(), ans.ID)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, ev)
		})
	}
}

// TestNotUTF8Refused: a body with a byte that is not UTF-8, or a lone
// surrogate escape, is refused with 400 saying where; without the check,
// the five ids below are one dedup key (each read as "ord-\uFFFD"), and
// four distinct events would be dropped as duplicates of the first. A
// source that opts in takes them as sent.
func TestNotUTF8Refused(t *testing.T) {
	for _, c := range []struct {
		name, body string
		want       int
		reason     string
	}{
		{"a Latin-1 byte", "{\"id\":\"ord-\xff\"}", http.StatusBadRequest, "body is not UTF-8 at byte 11 (0xff)"},
		{"another byte", "{\"id\":\"ord-\xfe\"}", http.StatusBadRequest, "body is not UTF-8 at byte 11 (0xfe)"},
		{"a lone high surrogate", `{"id":"ord-\ud800"}`, http.StatusBadRequest, `body has a lone surrogate \ud800 at byte 11`},
		{"a lone low surrogate", `{"id":"ord-\udfff"}`, http.StatusBadRequest, `body has a lone surrogate \udfff at byte 11`},
		{"a pair the wrong way round", `{"id":"\uDE00\uD83D"}`, http.StatusBadRequest, `body has a lone surrogate \ude00 at byte 7`},
		{"a high surrogate before a letter", `{"id":"\ud83d\u0041"}`, http.StatusBadRequest, `body has a lone surrogate \ud83d at byte 7`},
		{"an escaped backslash, then a surrogate", `{"id":"\\\ud800"}`, http.StatusBadRequest, `body has a lone surrogate \ud800 at byte 9`},
		{"in a key, nested", `{"id":"x","a":[{"\uDBFF":1}]}`, http.StatusBadRequest, `body has a lone surrogate \udbff at byte 17`},
		{"a Latin-1 byte in a key", "{\"id\":\"x\",\"caf\xe9\":1}", http.StatusBadRequest, "body is not UTF-8 at byte 14 (0xe9)"},
		{"a real U+FFFD", "{\"id\":\"ord-\xef\xbf\xbd\"}", http.StatusOK, ""},
		{"a pair", `{"id":"ord-\ud83d\ude00 \uD83D\uDE00"}`, http.StatusOK, ""},
		{"an escaped backslash, then text", `{"id":"\\ud800"}`, http.StatusOK, ""},
	} {
		for _, allow := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/allow=%v", c.name, allow), func(t *testing.T) {
				dedup, err := rules.CompileValue("body.id")
				if err != nil {
					t.Fatal(err)
				}
				app := &recordingAppender{}
				src := ingest.Source{Name: "s", Path: "/hooks/s", DedupKey: dedup, DedupWindow: time.Hour, AllowInvalidUTF8: allow}
				h := ingest.New(ingest.Config{Sources: []ingest.Source{src}, MaxBody: 1 << 20}, app, nil)
				req := httptest.NewRequest(http.MethodPost, "/hooks/s", strings.NewReader(c.body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				want := c.want
				if allow {
					want = http.StatusOK
				}
				if rec.Code != want {
					t.Fatalf("POST %q = %d %s, want %d", c.body, rec.Code, rec.Body, want)
				}
				if want == http.StatusOK {
					if app.len() != 1 || string(app.entries[0].Event.Body) != c.body {
						t.Errorf("accepted body: %d appended, want 1 stored as sent", app.len())
					}
					return
				}
				var answer struct{ Error string }
				json.Unmarshal(rec.Body.Bytes(), &answer)
				if app.len() != 0 || !strings.HasPrefix(answer.Error, c.reason) || !strings.HasSuffix(answer.Error, `allow_invalid_utf8 = true on source "s")`) {
					t.Errorf("refused body: %d appended, answer %s; want none appended and a reason starting %q, with the switch", app.len(), rec.Body, c.reason)
				}
			})
		}
	}
}

// TestSlowBodyGets408: a sender whose body does not arrive within the
// server's read_timeout is answered 408 Request Timeout, with a one-line
// reason that quotes no address (it was 400 "read body: read tcp
// 127.0.0.1:…->127.0.0.1:…: i/o timeout"); the log line says the same,
// the remote address in its own field.
func TestSlowBodyGets408(t *testing.T) {
	var logs testlog.Buffer
	h := ingest.New(ingest.Config{Sources: []ingest.Source{{Name: "s", Path: "/hooks/s"}}, MaxBody: 1 << 20},
		&recordingAppender{}, slog.New(slog.NewTextHandler(&logs, nil)))
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// 100 bytes declared, 10 sent: the rest never comes.
	if _, err := io.WriteString(conn, "POST /hooks/s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event\":"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to a slow body: %v, want a 408", err)
	}
	defer resp.Body.Close()
	var ans struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		t.Fatalf("answer's body: %v, want one line of JSON", err)
	}
	if resp.StatusCode != http.StatusRequestTimeout || ans.Error == "" {
		t.Errorf("answer = %d %q, want 408 with a reason", resp.StatusCode, ans.Error)
	}
	for _, bad := range []string{"127.0.0.1", "tcp", "i/o timeout", "\n"} {
		if strings.Contains(ans.Error, bad) {
			t.Errorf("reason %q contains %q, want one line that quotes no address", ans.Error, bad)
		}
	}
	line := logs.String()
	if !strings.Contains(line, "webhook refused") || !strings.Contains(line, "status=408") || strings.Contains(line, "i/o timeout") {
		t.Errorf("log = %s, want one webhook refused line with status=408 and the reason", line)
	}
}
