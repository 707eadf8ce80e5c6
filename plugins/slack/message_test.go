package slack

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

var update = flag.Bool("update", false, "rewrite the expected output of testdata/*.golden")

// goldenSep separates a golden file's input (a webhook body) from the
// expected message text.
const goldenSep = "\n----- text -----\n"

// TestDefaultMessageGolden renders the default message of each body in
// testdata/*.golden and compares it with the text after the separator.
// With -update it rewrites that text.
func TestDefaultMessageGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.golden files (%v)", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".golden"), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(b), goldenSep)
			if !ok && !*update {
				t.Fatalf("%s has no %q separator", file, strings.TrimSpace(goldenSep))
			}
			ev := sdk.Event{
				ID: "evt-golden-1", Source: "callkaro", Route: "all-calls",
				ReceivedAt: time.Date(2025, 12, 19, 16, 1, 7, 0, time.UTC),
				Body:       json.RawMessage(in),
			}
			got := defaultText(&ev)
			if *update {
				if err := os.WriteFile(file, []byte(in+goldenSep+got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != strings.TrimSuffix(want, "\n") {
				t.Errorf("defaultText(%s) =\n%s\nwant\n%s", file, got, want)
			}
		})
	}
}

// TestDefaultMessagePosted checks the whole path for the example payload:
// the fake Slack receives the golden text as {"text": …}.
func TestDefaultMessagePosted(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "call_ended.golden"))
	if err != nil {
		t.Fatal(err)
	}
	_, want, _ := strings.Cut(string(b), goldenSep)
	f := newFakeSlack(t)
	s, _ := newTestSink(t, f.URL(), nil)
	ev := sinktest.NewEvent(0)
	ev.Body, err = os.ReadFile(filepath.Join("..", "..", "examples", "callkaro", "call_ended.json"))
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, 0, deliver(t, s, []sdk.Event{ev})[0], "delivered", 0, "")
	if got := f.texts(); len(got) != 1 || got[0] != strings.TrimSuffix(want, "\n") {
		t.Errorf("fake Slack got texts %q, want [%q]", got, want)
	}
}

func TestGenericExcerptIsTruncated(t *testing.T) {
	ev := sdk.Event{ID: "e1", Source: "crm", Body: json.RawMessage(`{"note": "` + strings.Repeat("é<", 3000) + `"}`)}
	got := defaultText(&ev)
	head, excerpt, _ := strings.Cut(got, "\n")
	if head != "event e1 from crm" {
		t.Errorf("first line = %q, want %q", head, "event e1 from crm")
	}
	if !strings.HasSuffix(excerpt, "…```") || !strings.Contains(excerpt, "é&lt;") || strings.Contains(excerpt, "<") {
		t.Errorf("excerpt does not end with …``` or is not escaped: …%s", excerpt[len(excerpt)-40:])
	}
	raw := strings.NewReplacer("&lt;", "<", "```", "", "…", "").Replace(excerpt)
	if n := len([]rune(raw)); n != excerptMax {
		t.Errorf("excerpt holds %d characters of the body, want %d", n, excerptMax)
	}
}

func TestTransformPassedThrough(t *testing.T) {
	f := newFakeSlack(t)
	s, _ := newTestSink(t, f.URL(), map[string]any{"username": "pipelined", "icon_emoji": ":telephone_receiver:"})
	blocks := `[{"type":"section","text":{"type":"mrkdwn","text":"*Interested lead* from <tel:919876543210|919876543210>"}},{"type":"divider"}]`
	batch := events(0, 3)
	batch[0].Transformed = json.RawMessage(`{"text": "Interested lead", "blocks": ` + blocks + `, "unfurl_links": false}`)
	batch[1].Transformed = json.RawMessage(`{"blocks": ` + blocks + `, "username": "from-transform"}`)
	batch[2].Transformed = json.RawMessage(`{"lead": "not a slack message"}`) // falls back to the default text
	for i, r := range deliver(t, s, batch) {
		checkResult(t, i, r, "delivered", 0, "")
	}
	got := f.requests()
	if len(got) != 3 {
		t.Fatalf("fake Slack got %d requests, want 3", len(got))
	}
	var wantBlocks any
	if err := json.Unmarshal([]byte(blocks), &wantBlocks); err != nil {
		t.Fatal(err)
	}
	for i, r := range got[:2] {
		if !reflect.DeepEqual(r.Msg["blocks"], wantBlocks) {
			t.Errorf("message %d blocks = %v, want %v", i, r.Msg["blocks"], wantBlocks)
		}
		if r.Msg["username"] != "pipelined" || r.Msg["icon_emoji"] != ":telephone_receiver:" {
			t.Errorf("message %d = %s, want the username and icon_emoji overrides", i, r.Raw)
		}
		if _, ok := r.Msg["channel"]; ok {
			t.Errorf("message %d = %s has a channel, want none (not configured)", i, r.Raw)
		}
	}
	if got[0].Msg["text"] != "Interested lead" || got[0].Msg["unfurl_links"] != false {
		t.Errorf("message 0 = %s, want text and unfurl_links as the transform made them", got[0].Raw)
	}
	if txt, _ := got[2].Msg["text"].(string); !strings.HasPrefix(txt, ":telephone_receiver: *Call ended*") {
		t.Errorf("message 2 text = %q, want the default call_ended text (the transform is no message)", txt)
	}
}

const testTemplate = `{{.Source}}/{{.Route}}: {{.Body.data.from}} called {{.Body.data.to}} for {{duration .Body.data.call_duration}}` +
	` ({{.Body.data.post_call.lead_status}}{{with .Body.data.missing}}, {{.}}{{end}}) {{link .Body.data.call_link "open"}} <!here>` +
	`{{$n := .Body.data.call_metadata.name}} name={{$n}} age={{.Body.data.call_metadata.age}} id={{.ID}} at {{.ReceivedAt.Format "15:04:05"}}`

func TestTemplate(t *testing.T) {
	const want = "callkaro/sinktest: 91 &lt;b&gt;&amp; called 918765432109 for 2m0s (interested) " +
		"<https://callkaro.ai/dashboard/call-history?call_id=abc123|open> <!here> name=Jatin age=25 id=sinktest-000000 at 16:01:07"
	file := filepath.Join(t.TempDir(), "message.tmpl")
	if err := os.WriteFile(file, []byte(testTemplate+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, extra := range map[string]map[string]any{
		"template":      {"template": testTemplate},
		"template_file": {"template_file": file},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeSlack(t)
			s, _ := newTestSink(t, f.URL(), extra)
			ev := sinktest.NewEvent(0)
			ev.Body = json.RawMessage(strings.Replace(string(ev.Body), `"919876543210"`, `"91 <b>&"`, 1))
			checkResult(t, 0, deliver(t, s, []sdk.Event{ev})[0], "delivered", 0, "")
			got := f.texts()
			if len(got) != 1 || strings.TrimSuffix(got[0], "\n") != want {
				t.Errorf("template message = %q,\nwant %q", got, want)
			}
		})
	}
}

func TestTemplateRuntimeErrors(t *testing.T) {
	tests := []struct{ name, tmpl, errHas string }{
		{"index-out-of-range", `{{index .Body.data.functions_called 5}}`, "index out of range"},
		{"empty", `{{if .Body.data.nothing}}x{{end}}  `, "rendered an empty message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSlack(t)
			s, _ := newTestSink(t, f.URL(), map[string]any{"template": tt.tmpl})
			batch := events(0, 2)
			batch[1].Transformed = json.RawMessage(`{"text": "from the transform"}`)
			results := deliver(t, s, batch)
			checkResult(t, 0, results[0], "permanent", 0, tt.errHas)
			checkResult(t, 1, results[1], "delivered", 0, "")
			if got := f.texts(); len(got) != 1 || got[0] != "from the transform" {
				t.Errorf("fake Slack got %q, want only the transformed message", got)
			}
		})
	}
}

func TestLink(t *testing.T) {
	tests := []struct{ url, label, want string }{
		{"https://x.test/a?b=1&c=2", "Open call", "<https://x.test/a?b=1&amp;c=2|Open call>"},
		{"https://x.test/a|b", "<go>", "<https://x.test/a%7Cb|&lt;go&gt;>"},
		{"javascript:alert(1)", "Open call", "Open call"},
		{"!channel", "x", "x"},
	}
	for _, tt := range tests {
		if got := link(tt.url, tt.label); string(got) != tt.want {
			t.Errorf("link(%q, %q) = %q, want %q", tt.url, tt.label, got, tt.want)
		}
	}
}

// TestConfigureIgnoresContext makes sure Configure needs no live context.
func TestConfigureIgnoresContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	t.Setenv(webhookEnv, "https://hooks.slack.com"+hookPath)
	if err := newSink().Configure(ctx, sinktest.Config(t, map[string]any{"webhook_url_env": webhookEnv})); err != nil {
		t.Errorf("Configure = %v, want nil", err)
	}
}
