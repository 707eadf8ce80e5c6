package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// evil holds every string of hostile, in a stable order: each field the
// daemon answers with gets all of them.
func evil() string {
	names := make([]string, 0, len(hostile))
	for n := range hostile {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(hostile[n] + "|")
	}
	return b.String()
}

// evilLog is a memlog whose queues are being rebuilt, the last attempt
// failed with an evil error.
type evilLog struct{ *memlog.Log }

func (evilLog) QueuesRebuilding() (pipeline.QueueRebuild, bool) {
	return pipeline.QueueRebuild{Read: 1, Total: 2, Err: "rebuild: " + evil()}, true
}

// evilServer serves the admin API with sender-chosen text in every string
// it answers with: ids, sources, dedup keys, headers, bodies, routes,
// errors, rejection reasons, sink states and reload's keys.
func evilServer(t *testing.T) *httptest.Server {
	t.Helper()
	x := evil()
	ml := memlog.New()
	t.Cleanup(func() { ml.Close() })
	ctx := context.Background()
	// The body is JSON (as the log keeps it) whose strings hold raw DEL,
	// C1, bidi and zero-width characters, and bytes that are not UTF-8:
	// JSON allows them unescaped.
	body := []byte("{\"id\": \"" + "\x7f\u009b2J\u202efdp.exe\u200b\U000e0041\xff\x9b" + "\", \"n\": 1}")
	if !json.Valid(body) {
		t.Fatalf("body %q is not JSON", body)
	}
	ev := pipeline.Event{ID: "ev-" + x, Source: "src-" + x, ReceivedAt: time.Now().Add(-time.Minute), Auth: "auth-" + x,
		Headers: map[string]string{"x-" + x: "v-" + x}, Body: body}
	if _, err := ml.Append(ctx, []pipeline.Entry{{Event: ev, DedupKey: "dk-" + x,
		Targets: []pipeline.Target{{Sink: "crm", Route: "route-" + x}, {Sink: "slack", Route: "r-" + x, Err: "transform: " + x}}}}); err != nil {
		t.Fatal(err)
	}
	ds, err := ml.Queue("crm").Fetch(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch = %v, %v", ds, err)
	}
	if err := ml.Queue("crm").Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: "crm said " + x}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ml.Reject(ctx, pipeline.Rejection{Source: "src-" + x, ReceivedAt: time.Now(), Status: 422, Reason: "schema: /" + x + ": required",
		RemoteAddr: "addr-" + x, Keep: time.Hour}); err != nil {
		t.Fatal(err)
	}
	h := admin.Handler(admin.Options{Log: evilLog{ml}, Ready: func() error { return nil }, Token: []byte(cliToken),
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "crm", Rebuilding: true}, {Name: "slack"}, {Name: "sink-" + x, Plugin: "failed-" + x, PluginReason: "panic: " + x, Breaker: "b-" + x,
				LastError: "exit: " + x, LastErrorAt: time.Now(), QueueError: "queue: " + x}}, nil
		},
		Reload: func() (admin.ReloadResult, error) {
			return admin.ReloadResult{RestartNeeded: []string{"key-" + x}}, nil
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// TestAdminCLIEscapesTerminalControls: what webhook senders chose reaches
// the operator's terminal as visible escapes, never as control sequences
// it would act on (retitle, clear, recolor, overwrite, reorder); --json
// leaves the API's JSON as it is.
func TestAdminCLIEscapesTerminalControls(t *testing.T) {
	srv := evilServer(t)
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	a := []string{"--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN"}
	x := evil()
	id := "ev-" + x
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string // each must appear
		stderr []string
	}{
		{"events list", []string{"events", "list"}, 0, []string{`ev-secret\u0008`, `src-secret\u0008`, `dk-secret\u0008`, `\u001b]0;PWNED-TITLE\u0007`, `\u202efdp.exe`}, nil},
		{"events list newest", []string{"events", "list", "--newest"}, 0, []string{`\u001b[2J\u001b[31mRED\u001b[0m`}, nil},
		{"events show", []string{"events", "show", id}, 0, []string{
			`id:`, `\u001b]0;PWNED-TITLE\u0007`, `dedup_key:`, `header x-`, `a\tb\nc`, `ok\rFAKE`,
			`crm said secret\u0008`, `transform: secret\u0008`, `route-secret\u0008`, `"id": "\u007f\u009b2J\u202efdp.exe\u200b\udb40\udc41\xff\x9b"`}, nil},
		{"events list rejected", []string{"events", "list", "--rejected"}, 0, []string{`schema: /secret\u0008`, `\u009b2J`, `addr-secret\u0008`}, nil},
		{"sinks", []string{"sinks"}, 0, []string{`sink-secret\u0008`, `failed-secret\u0008`, `: panic: secret\u0008`, `b-secret\u0008`, `exit: secret\u0008`, `\u2066x\u2069`},
			[]string{`queue: secret\u0008`, `rebuild: secret\u0008`}},
		{"dlq list", []string{"dlq", "list", "slack"}, 0, []string{`transform: secret\u0008`, `\u009b2J`}, nil},
		{"dlq retry", []string{"dlq", "retry", "slack", "--all"}, 0, []string{"retried 1 dead letter(s) of slack", `ev-secret\u0008`}, nil},
		{"dlq retry not found", []string{"dlq", "retry", "slack", "--id", id}, 1, nil, []string{`not in the dead-letter queue of slack: ev-secret\u0008`, `a\tb\nc`}},
		{"reload", []string{"reload"}, 0, []string{`key-secret\u0008`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runPipelined(t, append(tt.args, a...)...)
			if code != tt.code {
				t.Fatalf("pipelined %s: exit %d, want %d\nstderr: %q", tt.name, code, tt.code, stderr)
			}
			for out, s := range map[string]string{"stdout": stdout, "stderr": stderr} {
				if r, ok := unsafeRune(s, true); ok {
					t.Errorf("pipelined %s: %s holds %q:\n%q", tt.name, out, r, s)
				}
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("pipelined %s: stdout lacks %q:\n%s", tt.name, want, stdout)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("pipelined %s: stderr lacks %q:\n%s", tt.name, want, stderr)
				}
			}
		})
	}

	// The table keeps its shape: one line per row, each column where its
	// heading is (the escapes only make the cells wider).
	t.Run("table shape", func(t *testing.T) {
		_, stdout, _ := runPipelined(t, append([]string{"events", "list"}, a...)...)
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("events list: %d lines, want a heading and one row:\n%s", len(lines), stdout)
		}
		head, row := lines[0], []rune(lines[1])
		for _, col := range []string{"SEQ", "RECEIVED_AT", "SOURCE", "SINKS", "DEDUP_KEY"} {
			at := utf8.RuneCountInString(head[:strings.Index(head, col)])
			if at >= len(row) || row[at-1] != ' ' || row[at] == ' ' {
				t.Errorf("events list: the row's %s cell does not start under its heading (rune %d):\n%s", col, at, stdout)
			}
		}
	})

	// An error line the daemon words (here from a reload it refuses, and
	// a sender's key) is escaped too, and stays on its lines.
	t.Run("error", func(t *testing.T) {
		srv := httptest.NewServer(admin.Handler(admin.Options{Token: []byte(cliToken),
			Reload: func() (admin.ReloadResult, error) {
				return admin.ReloadResult{}, errors.New("bad key " + x + "\nsecond problem")
			}}))
		t.Cleanup(srv.Close)
		code, _, stderr := runPipelined(t, "reload", "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")
		if r, ok := unsafeRune(stderr, true); code != 1 || ok || !strings.Contains(stderr, `\u001b]0;PWNED-TITLE`) || !strings.Contains(stderr, "\nsecond problem") {
			t.Errorf("reload refused: exit %d, stderr %q (holds %q); want 1, the escapes, and the second problem on a line of its own", code, stderr, r)
		}
	})

	// --json is the API's JSON as it is: the decoded strings are the
	// sender's, neither lost nor escaped twice.
	t.Run("json", func(t *testing.T) {
		code, stdout, stderr := runPipelined(t, append([]string{"events", "show", id, "--json"}, a...)...)
		if code != 0 {
			t.Fatalf("events show --json: exit %d, %s", code, stderr)
		}
		var e admin.Event
		if err := json.Unmarshal([]byte(stdout), &e); err != nil {
			t.Fatalf("events show --json: %v\n%s", err, stdout)
		}
		// Each byte that is not UTF-8 is U+FFFD in JSON, as the daemon wrote it.
		if want := string([]rune(x)); e.DedupKey != "dk-"+want {
			t.Errorf("events show --json: dedup_key %q, want %q", e.DedupKey, "dk-"+want)
		}
	})
}
