package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestURLTokenThroughTheDaemon: a source with auth type url-token, whose
// sender (CallKaro) can only be given a URL, accepts a POST whose URL holds
// the token (the new one or the one being rotated out) and refuses one
// without it, with a wrong one or with the token under another name with
// 401 naming which. Then no token sent
// is anywhere: the daemon's log, `events list --rejected --json`, `events
// show` of the accepted event (a proxy's X-Forwarded-Uri is stored
// redacted), the metrics, nor the bytes of the log and archive directories.
func TestURLTokenThroughTheDaemon(t *testing.T) {
	const (
		token = "ck-e2e-live-token-5e0a"
		old   = "ck-e2e-old-token-91bc"
		wrong = "ck-e2e-guessed-token-77f3"
	)
	dir := t.TempDir()
	cfg := harness.Listeners("") + harness.BadgerLog(filepath.Join(dir, "log")) + `
[[source]]
name = "callkaro"
path = "/hooks/callkaro"
dedup_key = "body.data.callSid"
auth = { type = "url-token", param = "token", secret_env = ["PIPELINED_E2E_URL_TOKEN", "PIPELINED_E2E_URL_TOKEN_OLD"] }
keep_rejected = "1h"

[[sink]]
name = "archive"
plugin = "archive"
config = { dir = "archive" }
` + harness.AllCallsRoute("archive")
	d, err := harness.StartWith(t, harness.WriteConfig(t, dir, cfg), harness.Options{
		Env: []string{"PIPELINED_E2E_URL_TOKEN=" + token, "PIPELINED_E2E_URL_TOKEN_OLD=" + old}})
	if err != nil {
		t.Fatal(err)
	}
	post := func(query, sid string) (int, string) {
		t.Helper()
		target := "/hooks/callkaro"
		if query != "" {
			target += "?" + query
		}
		h := http.Header{"X-Forwarded-Uri": {target}}
		code, ans, err := harness.PostWith(harness.Client, d.URL+target, "application/json", h, harness.CallEvent(sid, "interested"))
		if err != nil {
			t.Fatalf("POST ?%s: %v", query, err)
		}
		msg, _ := ans["error"].(string)
		if id, ok := ans["id"].(string); ok && code == 200 {
			msg = id
		}
		return code, msg
	}

	code, id := post("agent=7&token="+token, "url-1")
	if code != 200 {
		t.Fatalf("POST with the token = %d %s, want 200", code, id)
	}
	code, id2 := post("token="+old, "url-2")
	if code != 200 {
		t.Fatalf("POST with the old token, still listed = %d %s, want 200", code, id2)
	}
	for _, c := range []struct{ query, want string }{
		{"", "missing token: the URL has no token query parameter"},
		{"token=" + wrong, "invalid token in the token query parameter"},
		{"token=" + wrong + "&token=" + token, "multiple token query parameters in the URL"},
		// The token under another name: refused, and redacted by its value.
		{"key=" + token, "missing token: the URL has no token query parameter"},
	} {
		if code, ans := post(c.query, "url-refused"); code != 401 || ans != c.want {
			t.Errorf("POST ?%s = %d %q, want 401 %q", c.query, code, ans, c.want)
		}
	}
	harness.WaitArchived(t, filepath.Join(dir, "archive"), []string{id, id2}, 30*time.Second)
	d.WaitLog(t, "invalid token in the token query parameter", 1, 5*time.Second)

	rejected := d.CLI(t, "events", "list", "--rejected", "--json")
	if !strings.Contains(rejected, "missing token") || !strings.Contains(rejected, "token=REDACTED") {
		t.Errorf("events list --rejected --json = %s\nwant the four refusals, their forwarded URL redacted", rejected)
	}
	shown := d.CLI(t, "events", "show", id)
	if !strings.Contains(shown, "/hooks/callkaro?agent=7&token=REDACTED") {
		t.Errorf("events show %s = %s\nwant x-forwarded-uri with the token redacted and agent=7 kept", id, shown)
	}
	resp, err := harness.Client.Get(d.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(mb)
	if !strings.Contains(metrics, `outcome="unauthorized",source="callkaro"} 4`) {
		t.Errorf("metrics: want 4 unauthorized requests of callkaro counted")
	}
	d.Kill(syscall.SIGTERM)
	<-d.Exited()

	// The bytes on disk: the premise is that a plain grep finds what the
	// log and the archive hold (the callSid).
	var disk bytes.Buffer
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := os.ReadFile(p)
			disk.Write(b)
		}
		return nil
	})
	if !bytes.Contains(disk.Bytes(), []byte("url-2")) {
		t.Fatalf("the data directory holds no callSid url-2 in plain bytes: grepping it for tokens proves nothing")
	}
	for what, out := range map[string]string{
		"daemon's log": d.Log(), "events list --rejected": rejected, "events show": shown,
		"metrics": metrics, "data directory": disk.String(),
	} {
		for _, tok := range []string{token, old, wrong} {
			if strings.Contains(out, tok) {
				t.Errorf("the %s holds a token sent in the URL (%.12s…)", what, tok)
			}
		}
	}
}
