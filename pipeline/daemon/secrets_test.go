package daemon

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/config"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// TestStoredHeadersDoNotAuthenticate posts a signed webhook to a source of
// every auth type, reads back every event and kept rejection through the
// admin API with the token, and sends each again, headers and body as
// read: every one is refused 401 (issue 15, item 1). No credential or
// signature header is among those read, nor the headers of a source's
// drop_headers; a url-token source's URL, copied into a header by a proxy,
// is read back with its token redacted.
func TestStoredHeadersDoNotAuthenticate(t *testing.T) {
	t.Setenv(pluginVar, "deliver")
	t.Setenv("T_ADMIN", "admin-token")
	key := []byte("0123456789abcdef0123456789abcdef")
	t.Setenv("T_SW", "whsec_"+base64.StdEncoding.EncodeToString(key))
	t.Setenv("T_KEY", string(key))
	t.Setenv("T_BEARER", "bearer-secret")
	t.Setenv("T_BASIC", "user:basic-secret")
	t.Setenv("T_URL", "url-secret")
	blocks := ""
	for _, src := range []struct{ name, auth, extra string }{
		{"sw", `{ type = "standard-webhooks", secret_env = "T_SW" }`, ""},
		{"gh", `{ type = "hmac", preset = "github", secret_env = "T_KEY" }`, ""},
		{"stripe", `{ type = "hmac", preset = "stripe", secret_env = "T_KEY" }`, ""},
		{"generic", `{ type = "hmac", header = "X-Payload-Mac", secret_env = "T_KEY" }`, `drop_headers = ["X-Shared-Key"]` + "\n"},
		{"bearer", `{ type = "bearer", secret_env = "T_BEARER" }`, ""},
		{"basic", `{ type = "basic", secret_env = "T_BASIC" }`, ""},
		{"url", `{ type = "url-token", param = "token", secret_env = "T_URL" }`, ""},
	} {
		blocks += fmt.Sprintf("[[source]]\nname = %q\npath = \"/hooks/%s\"\nauth = %s\nkeep_rejected = \"1h\"\naccept = \"body.ok == true\"\n%s\n",
			src.name, src.name, src.auth, src.extra)
	}
	toml := fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token_env = "T_ADMIN"

[log]
dir = %q

%s%s`, t.TempDir(), blocks, deliverSinkTOML())
	a := startDaemon(t, toml)

	mac := func(msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	target := func(source string) string {
		if source == "url" {
			return "/hooks/url?token=url-secret"
		}
		return "/hooks/" + source
	}
	sign := func(source, body string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}, "X-Api-Key": {"api-key-secret"}, "X-Auth-Token": {"auth-token-secret"},
			"X-Shared-Key": {"shared-secret"}, "Cookie": {"session=secret"}, "X-Request-Id": {"req-" + source}}
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		switch source {
		case "sw":
			id := "msg_" + strconv.Itoa(len(body))
			h.Set("Webhook-Id", id)
			h.Set("Webhook-Timestamp", ts)
			h.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(mac(id+"."+ts+"."+body)))
		case "gh":
			h.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac(body)))
		case "stripe":
			h.Set("Stripe-Signature", "t="+ts+",v1="+hex.EncodeToString(mac(ts+"."+body)))
		case "generic":
			h.Set("X-Payload-Mac", hex.EncodeToString(mac(body)))
		case "bearer":
			h.Set("Authorization", "Bearer bearer-secret")
		case "basic":
			h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("user:basic-secret")))
		case "url":
			// The token is in the URL (target); a proxy passes the URL on.
			h.Set("X-Forwarded-Uri", target("url"))
		}
		return h
	}
	post := func(path string, h http.Header, body string) int {
		// path may hold a query: the url source's token.
		t.Helper()
		req, err := http.NewRequest("POST", "http://"+a.ingest+path, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	sources := []string{"sw", "gh", "stripe", "generic", "bearer", "basic", "url"}
	for _, s := range sources {
		// The premise: each signed request passes its source's auth; the
		// second is refused after auth (422) and kept with its headers.
		if code := post(target(s), sign(s, `{"ok":true}`), `{"ok":true}`); code != http.StatusOK {
			t.Fatalf("POST /hooks/%s signed = %d, want 200", s, code)
		}
		if code := post(target(s), sign(s, `{"ok":false}`), `{"ok":false}`); code != http.StatusUnprocessableEntity {
			t.Fatalf("POST /hooks/%s signed, not accepted = %d, want 422", s, code)
		}
	}

	c := admin.NewClient("http://"+a.admin, "admin-token", nil)
	forbidden := []string{"authorization", "cookie", "webhook-signature", "x-hub-signature-256", "stripe-signature",
		"x-payload-mac", "x-api-key", "x-auth-token"}
	for _, s := range sources {
		t.Run(s, func(t *testing.T) {
			evs, err := c.Events(t.Context(), url.Values{"source": {s}})
			if err != nil || len(evs.Events) != 1 {
				t.Fatalf("events of %s = %+v, %v; want 1", s, evs, err)
			}
			rjs, err := c.Rejections(t.Context(), url.Values{"source": {s}})
			if err != nil || len(rjs.Rejections) != 1 {
				t.Fatalf("rejections of %s = %+v, %v; want 1", s, rjs, err)
			}
			read := []struct {
				what string
				hdr  map[string]string
				body string
			}{
				{"event", evs.Events[0].Headers, string(evs.Events[0].Body)},
				{"rejection", rjs.Rejections[0].Headers, rjs.Rejections[0].Body},
			}
			for _, r := range read {
				if r.hdr["x-request-id"] != "req-"+s {
					t.Errorf("%s of %s: headers %v, want x-request-id kept (the premise: headers are stored)", r.what, s, r.hdr)
				}
				// drop_headers is the generic source's own.
				if _, ok := r.hdr["x-shared-key"]; ok != (s != "generic") {
					t.Errorf("%s of %s: x-shared-key stored = %v, want it dropped by generic's drop_headers only", r.what, s, ok)
				}
				for _, f := range forbidden {
					if v, ok := r.hdr[f]; ok {
						t.Errorf("%s of %s: header %s = %q stored, want it dropped", r.what, s, f, v)
					}
				}
				h := http.Header{}
				for k, v := range r.hdr {
					h.Set(k, v)
				}
				// The url source's stored X-Forwarded-Uri is the URL it was
				// sent to, as far as the store keeps it.
				again := "/hooks/" + s
				if u := r.hdr["x-forwarded-uri"]; u != "" {
					again = u
				}
				if s == "url" && again != "/hooks/url?token=REDACTED" {
					t.Errorf("%s of url: x-forwarded-uri = %q, want /hooks/url?token=REDACTED", r.what, again)
				}
				if code := post(again, h, r.body); code != http.StatusUnauthorized {
					t.Errorf("POST %s again with the %s's stored headers and body = %d, want 401", again, r.what, code)
				}
			}
		})
	}
}

// daemonAddrs are where a test daemon listens.
type daemonAddrs struct{ ingest, admin string }

// startDaemon runs a daemon on a memlog with the configuration toml until
// the test ends and returns its addresses once it is ready.
func startDaemon(t *testing.T, toml string) daemonAddrs {
	t.Helper()
	_, a := startDaemonWith(t, toml, Options{}, nil)
	return a
}

// startDaemonWith is startDaemon with options o (OnReady is the test's; a
// nil Notifier is one that does nothing) and setup, when not nil, called
// before Run; it returns the daemon too.
func startDaemonWith(t *testing.T, toml string, o Options, setup func(*Daemon)) (*Daemon, daemonAddrs) {
	t.Helper()
	d, a, _ := startStoppable(t, toml, o, setup)
	return d, a
}

// startStoppable is startDaemonWith that also returns stop, which starts
// the daemon's shutdown (cancels Run's ctx) at once and returns a channel
// closed when Run has returned; the test's cleanup stops it and waits.
func startStoppable(t *testing.T, toml string, o Options, setup func(*Daemon)) (*Daemon, daemonAddrs, func() <-chan struct{}) {
	t.Helper()
	cfg, err := config.Parse("test.toml", []byte(toml))
	if err != nil {
		t.Fatalf("config.Parse = %v", err)
	}
	ready := make(chan daemonAddrs, 1)
	o.OnReady = func(i, a net.Addr) { ready <- daemonAddrs{i.String(), a.String()} }
	if o.Notifier == nil {
		o.Notifier = noNotifier{}
	}
	d := New(cfg, &o)
	d.openLog = func(context.Context, config.Log, *slog.Logger, *atomic.Int64) (pipeline.Log, func() map[string]int64, error) {
		return memlog.New(), nil, nil
	}
	if setup != nil {
		setup(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	var runErr error
	go func() { runErr = d.Run(ctx); close(ended) }()
	stop := func() <-chan struct{} { cancel(); return ended }
	t.Cleanup(func() { <-stop() })
	select {
	case a := <-ready:
		return d, a, stop
	case <-ended:
		t.Fatalf("Run = %v before ready", runErr)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready after 30s")
	}
	return nil, daemonAddrs{}, nil
}
