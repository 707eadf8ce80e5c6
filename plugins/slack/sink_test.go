package slack

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/sdk"
	"github.com/pipelined/pipelined/sdk/sinktest"
)

// webhookEnv is the environment variable the tests put the webhook URL in.
const webhookEnv = "PIPELINED_TEST_SLACK_WEBHOOK"

// newTestSink returns a sink that logs to logs, configured to post to
// webhook with the extra config keys. It fails the test if Configure does.
func newTestSink(t *testing.T, webhook string, extra map[string]any) (*sink, *testlog.Buffer) {
	t.Helper()
	s, logs := newLoggedSink()
	t.Setenv(webhookEnv, webhook)
	cfg := map[string]any{"webhook_url_env": webhookEnv}
	for k, v := range extra {
		cfg[k] = v
	}
	if err := s.Configure(context.Background(), sinktest.Config(t, cfg)); err != nil {
		t.Fatalf("Configure(%v) = %v, want nil", cfg, err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, logs
}

func newLoggedSink() (*sink, *testlog.Buffer) {
	s := newSink()
	logs := &testlog.Buffer{}
	s.log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return s, logs
}

func events(first, n int) []sdk.Event {
	b := make([]sdk.Event, n)
	for i := range b {
		b[i] = sinktest.NewEvent(first + i)
	}
	return b
}

func deliver(t *testing.T, s sdk.Sink, batch []sdk.Event) []sdk.Result {
	t.Helper()
	results, err := s.Deliver(context.Background(), batch)
	if err != nil {
		t.Fatalf("Deliver(%d events) = error %v, want results", len(batch), err)
	}
	if len(results) != len(batch) {
		t.Fatalf("Deliver(%d events) = %d results", len(batch), len(results))
	}
	return results
}

func TestConformance(t *testing.T) {
	f := newFakeSlack(t)
	sinktest.Run(t, func(t *testing.T) (sdk.Sink, json.RawMessage) {
		t.Setenv(webhookEnv, f.URL())
		return newSink(), sinktest.Config(t, map[string]any{"webhook_url_env": webhookEnv})
	})
	for _, r := range f.requests() {
		if r.Status != 200 {
			t.Errorf("fake Slack answered %d to %s during the conformance run, want 200", r.Status, r.Raw)
		}
	}
	if len(f.requests()) == 0 {
		t.Error("the conformance run posted nothing to the fake Slack")
	}
}

// TestSlackAnswers checks how each answer of Slack becomes a result.
func TestSlackAnswers(t *testing.T) {
	type want struct {
		outcome string        // "delivered", "retry" or "permanent"
		after   time.Duration // for retry
		errHas  string        // phrase of the error
	}
	delivered := want{outcome: "delivered"}
	tests := []struct {
		name      string
		path      string // webhook path; hookPath when empty
		setup     func(f *fakeSlack)
		extra     map[string]any
		batch     []sdk.Event
		want      []want
		wantSent  int // requests the fake got
		transform string
	}{
		{name: "ok", batch: events(0, 2), want: []want{delivered, delivered}, wantSent: 2},
		{name: "channel-not-found-path", path: gonePath, batch: events(0, 1),
			want: []want{{outcome: "permanent", errHas: "404 channel_not_found"}}, wantSent: 1},
		{name: "channel-not-found-override", extra: map[string]any{"channel": "#nowhere"}, batch: events(0, 1),
			want: []want{{outcome: "permanent", errHas: "404 channel_not_found"}}, wantSent: 1},
		{name: "no-text", transform: `{"text": ""}`, batch: events(0, 1),
			want: []want{{outcome: "permanent", errHas: "400 no_text"}}, wantSent: 1},
		{name: "invalid-blocks", transform: `{"blocks": {"type": "section"}}`, batch: events(0, 1),
			want: []want{{outcome: "permanent", errHas: "400 invalid_blocks"}}, wantSent: 1},
		{name: "redirect", path: movedPath, batch: events(0, 1),
			want: []want{{outcome: "permanent", errHas: "301"}}, wantSent: 1},
		{name: "500-then-ok", setup: func(f *fakeSlack) { f.fail5xx = 1 }, batch: events(0, 2),
			want: []want{{outcome: "retry", errHas: "500 internal_error"}, delivered}, wantSent: 2},
		{name: "429-stops-the-batch", setup: func(f *fakeSlack) { f.rate, f.burst, f.tokens, f.last = 3, 3, 3, time.Now() },
			batch: events(0, 6),
			want: []want{delivered, delivered, delivered,
				{outcome: "retry", after: time.Second, errHas: "429 rate_limited"},
				{outcome: "not-attempted", after: time.Second, errHas: "not sent"},
				{outcome: "not-attempted", after: time.Second, errHas: "not sent"}},
			wantSent: 4},
		{name: "429-date-ten-years-ahead", setup: func(f *fakeSlack) {
			f.rate, f.burst, f.tokens, f.last = 1, 1, 1, time.Now()
			f.retryAfter = time.Now().AddDate(10, 0, 0).UTC().Format(http.TimeFormat)
		},
			batch: events(0, 3),
			want: []want{delivered, // at most a day, not ten years
				{outcome: "retry", after: 24 * time.Hour, errHas: "429 rate_limited"},
				{outcome: "not-attempted", after: 24 * time.Hour, errHas: "not sent"}},
			wantSent: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSlack(t)
			if tt.setup != nil {
				f.set(tt.setup)
			}
			path := tt.path
			if path == "" {
				path = hookPath
			}
			s, _ := newTestSink(t, f.srv.URL+path, tt.extra)
			if tt.transform != "" {
				for i := range tt.batch {
					tt.batch[i].Transformed = json.RawMessage(tt.transform)
				}
			}
			results := deliver(t, s, tt.batch)
			for i, r := range results {
				checkResult(t, i, r, tt.want[i].outcome, tt.want[i].after, tt.want[i].errHas)
			}
			if got := len(f.requests()); got != tt.wantSent {
				t.Errorf("fake Slack got %d requests, want %d", got, tt.wantSent)
			}
		})
	}
}

func checkResult(t *testing.T, i int, r sdk.Result, outcome string, after time.Duration, errHas string) {
	t.Helper()
	gotAfter, retry := r.IsRetry()
	notAfter, notAttempted := r.IsNotAttempted()
	switch {
	case outcome == "delivered" && !r.IsDelivered(),
		outcome == "permanent" && !r.IsPermanent(),
		outcome == "retry" && (!retry || gotAfter != after),
		outcome == "not-attempted" && (!notAttempted || notAfter != after):
		t.Errorf("result %d = %v, want %s (after %v)", i, r, outcome, after)
	case errHas != "" && (r.Err() == nil || !strings.Contains(r.Err().Error(), errHas)):
		t.Errorf("result %d = %v, want an error containing %q", i, r, errHas)
	}
}

// TestRetryAfterHonoured delivers into a throttled webhook, waits what
// Slack asked, and redelivers what was retried, as the host does.
func TestRetryAfterHonoured(t *testing.T) {
	f := newFakeSlack(t)
	f.limit(2)
	s, logs := newTestSink(t, f.URL(), nil)
	batch := events(0, 5)
	results := deliver(t, s, batch)
	var again []sdk.Event
	var wait time.Duration
	retried := 0
	for i, r := range results {
		after, ok := r.IsRetry()
		if ok {
			retried++
		} else {
			after, ok = r.IsNotAttempted()
		}
		if ok {
			again = append(again, batch[i])
			wait = max(wait, after)
		}
	}
	if len(again) != 3 || retried != 1 || wait != time.Second {
		t.Fatalf("Deliver(5 events) to a webhook allowing 2/s = %v, want 2 delivered, 1 retried (throttled) and 2 not attempted, after 1s", results)
	}
	if got := len(f.requests()); got != 3 {
		t.Errorf("fake Slack got %d requests, want 3 (2 accepted, 1 throttled, none after)", got)
	}
	if !strings.Contains(logs.String(), "slack throttled the webhook") {
		t.Errorf("logs lack the throttling warning:\n%s", logs)
	}
	time.Sleep(wait)
	results = deliver(t, s, again[:2])
	for i, r := range results {
		checkResult(t, i, r, "delivered", 0, "")
	}
	if got, want := len(f.texts()), 4; got != want {
		t.Errorf("fake Slack accepted %d messages, want %d", got, want)
	}
}

func TestTimeouts(t *testing.T) {
	f := newFakeSlack(t)
	f.set(func(f *fakeSlack) { f.delay = 2 * time.Second })

	t.Run("request-timeout", func(t *testing.T) {
		s, _ := newTestSink(t, f.URL(), map[string]any{"timeout": "100ms"})
		start := time.Now()
		results := deliver(t, s, events(0, 2))
		for i, r := range results {
			checkResult(t, i, r, "retry", 0, `no answer within 100ms (config key "timeout")`)
		}
		if el := time.Since(start); el > 1500*time.Millisecond {
			t.Errorf("Deliver took %v, want about 2×100ms", el)
		}
	})

	t.Run("context-cancelled", func(t *testing.T) {
		s, _ := newTestSink(t, f.URL(), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		results, err := s.Deliver(ctx, events(0, 3))
		if err != nil || len(results) != 3 {
			t.Fatalf("Deliver = %v, %v; want 3 results", results, err)
		}
		// The event in flight is a retry (it was sent); the rest, not
		// sent, are not attempted.
		for i, r := range results {
			want := "not-attempted"
			if i == 0 {
				want = "retry"
			}
			checkResult(t, i, r, want, 0, "")
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("Deliver with a 100ms context took %v", el)
		}
	})
}

func TestNetworkError(t *testing.T) {
	f := newFakeSlack(t)
	s, _ := newTestSink(t, f.URL(), nil)
	f.srv.Close()
	for i, r := range deliver(t, s, events(0, 2)) {
		checkResult(t, i, r, "retry", 0, "post to slack")
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "webhook")
	if err := os.WriteFile(urlFile, []byte("https://hooks.slack.com"+hookPath+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLACK_TEST_HTTPS", "https://hooks.slack.com"+hookPath)
	t.Setenv("SLACK_TEST_HTTP", "http://hooks.slack.com"+hookPath)
	t.Setenv("SLACK_TEST_FTP", "ftp://hooks.slack.com"+hookPath)
	t.Setenv("SLACK_TEST_RELATIVE", "hooks.slack.com"+hookPath)
	t.Setenv("SLACK_TEST_BAD", "https://hooks.slack.com:port"+hookPath+"%zz")
	t.Setenv("SLACK_TEST_USER", "https://user:"+token+"@hooks.slack.com"+hookPath)
	tests := []struct {
		name string
		cfg  map[string]any
		want []string // phrases the error must contain, all of them
	}{
		{"inline-url", map[string]any{"webhook_url": "https://hooks.slack.com" + hookPath},
			[]string{`"webhook_url" must not be written inline`, "webhook_url_env", "webhook_url_file"}},
		{"env-and-file", map[string]any{"webhook_url_env": "SLACK_TEST_HTTPS", "webhook_url_file": urlFile},
			[]string{"only one of webhook_url_env and webhook_url_file"}},
		{"missing", map[string]any{}, []string{"webhook_url is required", "webhook_url_env", "webhook_url_file"}},
		{"env-unset", map[string]any{"webhook_url_env": "SLACK_TEST_NO_SUCH_VAR"}, []string{"SLACK_TEST_NO_SUCH_VAR", "not set"}},
		{"file-missing", map[string]any{"webhook_url_file": filepath.Join(dir, "nope")}, []string{"webhook_url_file", "nope"}},
		{"http", map[string]any{"webhook_url_env": "SLACK_TEST_HTTP"}, []string{"SLACK_TEST_HTTP", "use https"}},
		{"ftp", map[string]any{"webhook_url_env": "SLACK_TEST_FTP"}, []string{"not https"}},
		{"relative", map[string]any{"webhook_url_env": "SLACK_TEST_RELATIVE"}, []string{"not hold an absolute URL"}},
		{"unparsable", map[string]any{"webhook_url_env": "SLACK_TEST_BAD"}, []string{"not hold a valid URL"}},
		{"user-info", map[string]any{"webhook_url_env": "SLACK_TEST_USER"}, []string{"user info"}},
		{"bad-template", map[string]any{"webhook_url_file": urlFile, "template": "{{.Body.data.from"},
			[]string{`config key "template"`, "unclosed action"}},
		{"unknown-template-func", map[string]any{"webhook_url_file": urlFile, "template": "{{shout .ID}}"},
			[]string{`config key "template"`, `"shout" not defined`}},
		{"template-and-file", map[string]any{"webhook_url_file": urlFile, "template": "x", "template_file": urlFile},
			[]string{`only one of config keys "template" and "template_file"`}},
		{"template-file-missing", map[string]any{"webhook_url_file": urlFile, "template_file": filepath.Join(dir, "tmpl")},
			[]string{`config key "template_file"`, "no such file"}},
		{"timeout", map[string]any{"webhook_url_file": urlFile, "timeout": "soon"}, []string{`"timeout"`, "invalid duration"}},
		{"timeout-zero", map[string]any{"webhook_url_file": urlFile, "timeout": "0s"}, []string{`"timeout" must be positive`}},
		{"unknown-key", map[string]any{"webhook_url_file": urlFile, "icon": ":x:"}, []string{`unknown config key "icon"`}},
		{"every-problem", map[string]any{"webhook_url": "x", "template": "{{", "timeout": "-1s"},
			[]string{`"webhook_url"`, `"template"`, `"timeout"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newSink().Configure(context.Background(), sinktest.Config(t, tt.cfg))
			if err == nil {
				t.Fatalf("Configure(%v) = nil, want an error containing %q", tt.cfg, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Configure(%v) = %q, want it to contain %q", tt.cfg, err, w)
				}
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("Configure(%v) = %q, contains the webhook token", tt.cfg, err)
			}
		})
	}

	t.Run("http-to-loopback-is-allowed", func(t *testing.T) {
		for _, u := range []string{"http://127.0.0.1:9" + hookPath, "http://localhost" + hookPath, "http://[::1]:9" + hookPath} {
			t.Setenv(webhookEnv, u)
			if err := newSink().Configure(context.Background(), sinktest.Config(t, map[string]any{"webhook_url_env": webhookEnv})); err != nil {
				t.Errorf("Configure with webhook %s = %v, want nil", u, err)
			}
		}
	})
	t.Run("file", func(t *testing.T) {
		s := newSink()
		if err := s.Configure(context.Background(), sinktest.Config(t, map[string]any{"webhook_url_file": urlFile})); err != nil {
			t.Fatalf("Configure with webhook_url_file = %v, want nil", err)
		}
		if got := s.cfg.webhook.String(); got != "https://hooks.slack.com"+hookPath {
			t.Errorf("webhook from file = %q, want the file's line", got)
		}
	})
}

func TestDescribe(t *testing.T) {
	d := newSink().Describe()
	got := map[string]sdk.Field{}
	for _, f := range d.Fields {
		got[f.Name] = f
	}
	// Every config key is described; the secret's _env/_file keys are
	// implied by Secret.
	typ := reflect.TypeFor[config]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if name == "webhook_url_env" || name == "webhook_url_file" {
			continue
		}
		if _, ok := got[name]; !ok {
			t.Errorf("Describe() lacks config key %q", name)
		}
	}
	if f := got["webhook_url"]; !f.Secret || !f.Required {
		t.Errorf("Describe() webhook_url = %+v, want Secret and Required", f)
	}
	if f := got["timeout"]; f.Default != `"10s"` || f.Type != "duration" {
		t.Errorf("Describe() timeout = %+v, want a duration defaulting to \"10s\"", f)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Describe().Validate() = %v", err)
	}
}

// TestDescribeCheck: what the host's Check says about a config table
// agrees with Configure (for tables whose secret is set).
func TestDescribeCheck(t *testing.T) {
	t.Setenv(webhookEnv, "https://hooks.slack.com"+hookPath)
	d := newSink().Describe()
	tests := []struct {
		raw  string
		want []string // one phrase per problem, in order; nil for a config Configure accepts
	}{
		{`{"webhook_url_env": "` + webhookEnv + `"}`, nil},
		{`{"webhook_url_env": "` + webhookEnv + `", "template": "{{.ID}}", "username": "u", "icon_emoji": ":x:", "channel": "#c", "timeout": "1m"}`, nil},
		{`{}`, []string{"webhook_url is required"}},
		{`{"webhook_url": "https://hooks.slack.com/services/T/B/X"}`, []string{"webhook_url is a secret"}},
		{`{"webhook_url_env": "` + webhookEnv + `", "timeout": "soon"}`, []string{`config key "timeout"`}},
		{`{"webhook_url_env": "` + webhookEnv + `", "icon": ":x:"}`, []string{`unknown config key "icon"`}},
	}
	for _, tt := range tests {
		errs := d.Check(json.RawMessage(tt.raw))
		if len(errs) != len(tt.want) {
			t.Errorf("Check(%s) = %q, want %d problems %q", tt.raw, errs, len(tt.want), tt.want)
			continue
		}
		for i, err := range errs {
			if !strings.Contains(err.Error(), tt.want[i]) {
				t.Errorf("Check(%s) problem %d = %q, want it to contain %q", tt.raw, i, err, tt.want[i])
			}
		}
		_, cerr := parseConfig(json.RawMessage(tt.raw))
		if (cerr == nil) != (tt.want == nil) {
			t.Errorf("parseConfig(%s) = %v, but Check found %d problems: they disagree", tt.raw, cerr, len(errs))
		}
	}
}

// TestNoSecretLeaks drives the sink through every failure it knows and
// checks that no error and no log line contains the webhook URL or its
// token. The fake Slack even quotes the request URL in its error answers.
func TestNoSecretLeaks(t *testing.T) {
	var texts []string
	collect := func(results []sdk.Result, err error) {
		if err != nil {
			texts = append(texts, err.Error())
		}
		for _, r := range results {
			if r.Err() != nil {
				texts = append(texts, r.Err().Error())
			}
			texts = append(texts, r.String())
		}
	}
	var allLogs []*testlog.Buffer
	ctx := context.Background()

	f := newFakeSlack(t)
	f.set(func(f *fakeSlack) { f.echoPath = true })
	run := func(name string, extra map[string]any, prepare func(), batch []sdk.Event) {
		t.Run(name, func(t *testing.T) {
			s, logs := newTestSink(t, f.URL(), extra)
			allLogs = append(allLogs, logs)
			if prepare != nil {
				prepare()
			}
			collect(s.Deliver(ctx, batch))
		})
	}
	blocks := events(0, 1)
	blocks[0].Transformed = json.RawMessage(`{"blocks": "nope"}`)
	run("4xx", nil, nil, blocks)
	run("5xx", nil, func() { f.set(func(f *fakeSlack) { f.fail5xx = 2 }) }, events(0, 2))
	run("429", nil, func() { f.limit(1) }, events(0, 3))
	run("template-error", map[string]any{"template": "{{index .Body.data.functions_called 7}}"}, nil, events(0, 1))
	run("timeout", map[string]any{"timeout": "50ms"}, func() {
		f.set(func(f *fakeSlack) { f.rate, f.delay = 0, 500*time.Millisecond })
	}, events(0, 1))
	run("network", nil, func() { f.srv.Close() }, events(0, 1))
	t.Run("bad-hosts", func(t *testing.T) {
		for _, u := range []string{
			"http://127.0.0.1:1" + hookPath,       // connection refused
			"http://localhost:99999" + hookPath,   // invalid port
			"http://localhost:1" + hookPath + "?", // refused, odd URL
		} {
			t.Setenv(webhookEnv, u)
			s, logs := newLoggedSink()
			allLogs = append(allLogs, logs)
			if err := s.Configure(ctx, sinktest.Config(t, map[string]any{"webhook_url_env": webhookEnv, "timeout": "1s"})); err != nil {
				texts = append(texts, err.Error())
				continue
			}
			collect(s.Deliver(ctx, events(0, 1)))
		}
	})
	t.Run("config", func(t *testing.T) {
		for _, u := range []string{
			"http://hooks.slack.com" + hookPath,
			"ftp://hooks.slack.com" + hookPath,
			"https://hooks.slack.com:port" + hookPath,
			"https://hooks.slack.com" + hookPath + "%zz",
			"https://u:" + token + "@hooks.slack.com" + hookPath,
			"hooks.slack.com" + hookPath,
			" \x7f" + hookPath,
		} {
			t.Setenv(webhookEnv, u)
			for _, extra := range []map[string]any{{"webhook_url_env": webhookEnv}, {"webhook_url_env": webhookEnv, "template": "{{"}} {
				if err := newSink().Configure(ctx, sinktest.Config(t, extra)); err != nil {
					texts = append(texts, err.Error())
				} else {
					t.Errorf("Configure with webhook %q = nil, want an error", u)
				}
			}
		}
		file := filepath.Join(t.TempDir(), "url")
		_ = os.WriteFile(file, []byte("http://example.com"+hookPath), 0o600)
		err := newSink().Configure(ctx, sinktest.Config(t, map[string]any{"webhook_url_file": file}))
		texts = append(texts, err.Error())
		err = newSink().Configure(ctx, sinktest.Config(t, map[string]any{"webhook_url": "https://hooks.slack.com" + hookPath}))
		texts = append(texts, err.Error())
	})

	for _, l := range allLogs {
		texts = append(texts, strings.Split(l.String(), "\n")...)
	}
	if len(texts) < 20 {
		t.Fatalf("collected only %d errors and log lines; the test drove too few failures", len(texts))
	}
	for _, s := range texts {
		for _, secret := range []string{token, "T000/B000", f.URL()} {
			if strings.Contains(s, secret) {
				t.Errorf("error or log line leaks %q: %s", secret, s)
			}
		}
	}
	if testing.Verbose() {
		for _, s := range texts {
			t.Log(s)
		}
	}
	// And the redaction did happen: the fake quoted the path.
	if !strings.Contains(strings.Join(texts, "\n"), "[webhook_url]") {
		t.Error("no error shows [webhook_url]: the fake's quoted path was not redacted, or never seen")
	}
}

func TestDeliverUnconfigured(t *testing.T) {
	_, err := newSink().Deliver(context.Background(), events(0, 1))
	if err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("Deliver before Configure = %v, want a not configured error", err)
	}
}
