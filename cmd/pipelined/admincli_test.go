package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

const cliToken = "cli-token"

// adminServer serves the admin API over a memlog holding cli-0..cli-3:
// even ones routed to archive, odd ones dead in slack's DLQ.
func adminServer(t *testing.T) (*httptest.Server, *memlog.Log, *int) {
	t.Helper()
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	var es []pipeline.Entry
	for i := range 4 {
		ev := pipeline.Event{ID: fmt.Sprintf("cli-%d", i), Source: "callkaro", ReceivedAt: time.Now().Add(-time.Duration(4-i) * time.Minute),
			Body: []byte(fmt.Sprintf(`{"n":%d}`, i)), Auth: "none"}
		tg := pipeline.Target{Sink: "archive", Route: "all"}
		if i%2 == 1 {
			tg = pipeline.Target{Sink: "slack", Route: "leads", Err: "slack said 400: invalid_blocks"}
		}
		es = append(es, pipeline.Entry{Event: ev, Targets: []pipeline.Target{tg}, DedupKey: fmt.Sprintf("call-%d", i)})
	}
	if _, err := l.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	reloads := new(int)
	paused := map[string]bool{}
	var givenUp dispatch.GiveUps
	h := admin.Handler(admin.Options{
		GiveUps: func(sink string) admin.GiveUpSet {
			if sink == "crm" {
				return nil // removed from the configuration
			}
			return &givenUp
		},
		Pause: func(sink string, p bool) (bool, error) {
			changed := paused[sink] != p
			paused[sink] = p
			return changed, nil
		},
		ProbeNow: func(sink string) bool { return sink == "slack" }, // its breaker is open
		Ready:    func() error { return nil },
		Log:      l,
		Token:    []byte(cliToken),
		Sinks: func(ctx context.Context) ([]admin.SinkStatus, error) {
			var out []admin.SinkStatus
			for _, n := range []string{"archive", "slack"} {
				st, err := l.Queue(n).Stats(ctx)
				if err != nil {
					return nil, err
				}
				s := admin.SinkStatus{Name: n, Plugin: "running", PID: 42, Ready: st.Ready, Retrying: st.Retrying, Dead: st.Dead,
					Breaker: "closed", Paused: paused[n]}
				if n == "slack" {
					s.Plugin, s.LastError = "backoff", "plugin exited: exit status 1"
					s.InFlight, s.InFlightSeconds = 5, 12.4       // a batch the plugin holds
					s.Breaker, s.NextProbeSeconds = "open", 239.2 // its next probe in 4 minutes
					s.NextRetrySeconds = 3541.3                   // its retries after a Retry-After: 3600
				} else {
					s.HeldKeys, s.Held, s.OldestHeldAgeSeconds = 3, 7, 90.4 // delivery.order_key
				}
				out = append(out, s)
			}
			out = append(out, admin.SinkStatus{Name: "tally", Plugin: "failed", PluginReason: "panic: no config",
				LastError: `sink "tally": plugin exited before the handshake`, LastErrorAt: time.Now().Add(-3 * time.Minute)})
			// crm was removed from the configuration: listed while its
			// queue holds entries, as the daemon does.
			if st, err := l.Queue("crm").Stats(ctx); err != nil || st != (pipeline.QueueStats{}) {
				out = append(out, admin.SinkStatus{Name: "crm", Plugin: admin.PluginRemoved, Ready: st.Ready, Retrying: st.Retrying, Dead: st.Dead})
			}
			return out, nil
		},
		Reload: func() (admin.ReloadResult, error) {
			*reloads++
			switch {
			case *reloads == 2:
				return admin.ReloadResult{RestartNeeded: []string{"log.urls", "admin.listen"}}, nil
			case *reloads == 3:
				return admin.ReloadResult{SocketOwned: []string{"server.listen"}}, nil
			case *reloads > 3:
				return admin.ReloadResult{}, errors.New("pipeline.toml:4:1: unknown key foo")
			}
			return admin.ReloadResult{}, nil
		},
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, l, reloads
}

// runPipelined runs the CLI in-process with args and returns its exit code and output.
func runPipelined(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestAdminCLI(t *testing.T) {
	srv, l, reloads := adminServer(t)
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(cliToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A config naming the server and the token variable: no flags needed.
	cfg := filepath.Join(t.TempDir(), "pipeline.toml")
	listen := strings.TrimPrefix(srv.URL, "http://")
	if err := os.WriteFile(cfg, []byte("[admin]\nlisten = \""+listen+"\"\ntoken_env = \"PIPELINED_TEST_ADMIN_TOKEN\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := []string{"--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN"}
	anon := []string{"--admin", srv.URL}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		stdout   []string // each must appear
		stderr   []string
	}{
		{"sinks table", append([]string{"sinks"}, a...), 0,
			[]string{"NAME     PLUGIN                    BREAKER  PAUSED  READY  RETRYING  OLDEST_AGE_SECONDS  DEAD  HELD_KEYS  OLDEST_HELD_AGE_SECONDS  IN_FLIGHT  IN_FLIGHT_SECONDS  NEXT_PROBE_SECONDS  NEXT_RETRY_SECONDS  LAST_ERROR",
				"archive  running                   closed   -       2      0         240                 0     3          90                       -          -                  -                   -                   -",
				"slack    backoff                   open     -       0      0         -                   2     -          -                        5          12                 240                 3542                plugin exited: exit status 1",
				`tally    failed: panic: no config  -        -       0      0         -                   0     -          -                        -          -                  -                   -                   3m0s ago: plugin exited before the handshake`}, nil},
		{"sinks json next probe", append([]string{"sinks", "--json"}, a...), 0, []string{`"breaker": "open"`, `"next_probe_seconds": 239.2`, `"next_retry_seconds": 3541.3`}, nil},
		{"sinks json held", append([]string{"sinks", "--json"}, a...), 0, []string{`"held_keys": 3`, `"held": 7`, `"oldest_held_age_seconds": 90.4`}, nil},
		{"sinks pause without token", append([]string{"sinks", "pause", "archive"}, anon...), 1, nil, []string{"(HTTP 401)"}},
		{"sinks pause", []string{"sinks", "pause", "archive", "-c", cfg}, 0, []string{"sink archive paused"}, nil},
		{"sinks pause again", []string{"sinks", "pause", "archive", "-c", cfg}, 0, []string{"sink archive was paused already"}, nil},
		{"sinks table paused", append([]string{"sinks"}, a...), 0, []string{"archive  running                   closed   paused"}, nil},
		{"sinks json paused", append([]string{"sinks", "--json"}, a...), 0, []string{`"paused": true`, `"breaker": "closed"`}, nil},
		{"sinks pause, flags first", []string{"sinks", "-c", cfg, "pause", "archive"}, 0, []string{"sink archive was paused already"}, nil},
		{"sinks retry-now paused", []string{"sinks", "retry-now", "archive", "-c", cfg}, 0, []string{"sink archive: 0 events waiting for a retry made due now; the sink is paused: they wait until `pipelined sinks resume archive`\n"}, nil},
		{"sinks resume", []string{"sinks", "resume", "archive", "-c", cfg, "--json"}, 0, []string{`"sink": "archive"`, `"paused": false`, `"changed": true`}, nil},
		{"sinks pause unknown", []string{"sinks", "pause", "nope", "-c", cfg}, 1, nil, []string{`unknown sink "nope"`, "(HTTP 404)"}},
		{"sinks retry-now without token", append([]string{"sinks", "retry-now", "archive"}, anon...), 1, nil, []string{"(HTTP 401)"}},
		{"sinks retry-now", []string{"sinks", "retry-now", "archive", "-c", cfg}, 0, []string{"sink archive: 0 events waiting for a retry made due now; its breaker is closed\n"}, nil},
		{"sinks retry-now, breaker open", []string{"sinks", "-c", cfg, "retry-now", "slack"}, 0, []string{"sink slack: 0 events waiting for a retry made due now; its breaker is open: probing now (every event waiting goes once a probe succeeds)\n"}, nil},
		{"sinks retry-now json", []string{"sinks", "retry-now", "slack", "-c", cfg, "--json"}, 0, []string{`"sink": "slack"`, `"hastened": 0`, `"probing": true`, `"paused": false`}, nil},
		{"sinks retry-now unknown", []string{"sinks", "retry-now", "nope", "-c", cfg}, 1, nil, []string{`unknown sink "nope"`, "(HTTP 404)"}},
		{"sinks retry-now no sink", []string{"sinks", "retry-now", "-c", cfg}, 2, nil, []string{"want 1 argument(s), got 0"}},
		{"sinks pause unknown, flags first", []string{"sinks", "-c", cfg, "pause", "nope"}, 1, nil, []string{`pipelined sinks pause: unknown sink "nope"`}},
		{"sinks pause no sink", append([]string{"sinks", "pause"}, a...), 2, nil, []string{"want 1 argument"}},
		{"events list newest first", append([]string{"events", "list", "--newest", "--limit", "2"}, a...), 0,
			[]string{"cli-3  4    ", "cli-2  3    "}, []string{"more: add --after 3 (with --newest: the cursors of the two orders differ)"}},
		{"events list newest first, next page", append([]string{"events", "list", "--newest", "--after", "3"}, a...), 0,
			[]string{"cli-1  2    ", "cli-0  1    "}, nil},
		{"events list of an unknown sink", append([]string{"events", "list", "--sink", "crm"}, a...), 0,
			[]string{"ID  SEQ  RECEIVED_AT"}, []string{`note: the daemon has no sink "crm" (sinks: archive, slack, tally)`}},
		{"events list", append([]string{"events", "list", "--source", "callkaro", "--since", "1h"}, a...), 0,
			[]string{"ID     SEQ  RECEIVED_AT", "cli-0  1", "cli-3  4", "callkaro  slack    call-3"}, nil},
		{"events list when", append([]string{"events", "list", "--when", "body.n > 2"}, a...), 0, []string{"cli-3"}, nil},
		{"events list paged", append([]string{"events", "list", "--limit", "1"}, a...), 0, []string{"cli-0"}, []string{"more: add --after 1"}},
		{"events list bad when", append([]string{"events", "list", "--when", "body.n +"}, a...), 2, nil, []string{"pipelined events list: --when:", "usage:\n  pipelined events list [--source S]"}},
		{"replay bad when", append([]string{"replay", "--sink", "archive", "--since", "1h", "--when", "int(body)"}, a...), 2, nil, []string{"pipelined replay: --when:"}},
		{"events show", append([]string{"events", "show", "cli-2"}, a...), 0, []string{"id:           cli-2", "dedup_key:    call-2", `"n": 2`}, nil},
		{"events show deliveries", append([]string{"events", "show", "cli-1"}, a...), 0, []string{"deliveries:",
			"SINK   ROUTE  STATE  ATTEMPTS  FIRST_ATTEMPT_AT  LAST_ATTEMPT_AT  DELIVERED_AT  NEXT_ATTEMPT_AT  LAST_ERROR",
			"slack  leads  dead   0         -                 -                -             -                slack said 400: invalid_blocks"}, nil},
		{"events list state", append([]string{"events", "list", "--sink", "slack", "--state", "dead"}, a...), 0, []string{"cli-1", "cli-3"}, nil},
		{"events list state pending", append([]string{"events", "list", "--sink", "archive", "--state", "pending"}, a...), 0, []string{"cli-0", "cli-2"}, nil},
		{"events show missing", append([]string{"events", "show", "nope"}, a...), 1, nil, []string{`event "nope" is not in the log (HTTP 404)`}},
		{"dlq list", append([]string{"dlq", "list", "slack"}, a...), 0, []string{"ID     SEQ  FAILED_AT", "cli-1", "slack said 400: invalid_blocks"}, nil},
		{"replay of dead letters", []string{"replay", "--sink", "slack", "--since", "1h", "--when", "body.n == 1 || body.n == 3", "-c", cfg}, 0,
			[]string{"replayed to slack: 0 enqueued, 0 already queued, 2 in the dead-letter queue (not replayed: pipelined dlq retry slack --id ID, or --all) (2 matched of 2 scanned)"}, nil},
		{"replay of dead letters json", []string{"replay", "--sink", "slack", "--since", "1h", "--when", "body.n == 1", "-c", cfg, "--json"}, 0,
			[]string{`"already_queued":1`, `"in_dead_letter_queue":1`}, nil},
		{"dlq list unknown sink", append([]string{"dlq", "list", "nope"}, a...), 1, nil, []string{`unknown sink "nope"`}},
		{"sinks without token", append([]string{"sinks"}, anon...), 1, nil, []string{"(HTTP 401)", "--token-env"}},
		{"dlq retry without token", append([]string{"dlq", "retry", "slack", "--all"}, anon...), 1, nil, []string{"(HTTP 401)", "--token-env"}},
		{"dlq retry", append([]string{"dlq", "retry", "slack", "--id", "cli-1"}, a...), 0,
			[]string{"retried 1 dead letter(s) of slack\ncli-1\n"}, nil},
		{"dlq retry unknown id", append([]string{"dlq", "retry", "slack", "--id", "cli-0", "--token-file", tokenFile}, anon...), 1,
			[]string{"retried 0"}, []string{"not in the dead-letter queue of slack: cli-0"}},
		{"dlq drop via config", []string{"dlq", "drop", "slack", "--all", "-c", cfg}, 0, []string{"dropped 1 dead letter(s) of slack\ncli-3\n"}, nil},
		{"events show dropped", append([]string{"events", "show", "cli-3"}, a...), 0, []string{
			"SINK   ROUTE  STATE    ATTEMPTS  FIRST_ATTEMPT_AT  LAST_ATTEMPT_AT  DELIVERED_AT  NEXT_ATTEMPT_AT  DROPPED_AT            LAST_ERROR",
			"slack  leads  dropped  0         -                 -                -             -                20"}, nil},
		{"events list state dropped", append([]string{"events", "list", "--sink", "slack", "--state", "dropped"}, a...), 0, []string{"cli-3"}, nil},
		{"dlq add", append([]string{"dlq", "add", "archive", "--id", "cli-0", "--id", "cli-1", "--reason", "bad data"}, a...), 1,
			[]string{"gave up on 1 event(s) of archive: each goes to its dead-letter queue at its next turn\ncli-0\n"},
			[]string{"not waiting in the queue of archive: cli-1"}},
		{"dlq add json", append([]string{"dlq", "add", "archive", "--id", "cli-2", "--json"}, a...), 0,
			[]string{`"action": "add"`, `"count": 1`, `"cli-2"`}, nil},
		{"replay", []string{"replay", "--sink", "archive", "--since", "1h", "-c", cfg}, 0,
			[]string{"replayed to archive: 0 enqueued, 2 already queued (2 matched of 2 scanned)"}, nil},
		{"replay json", []string{"replay", "--sink", "slack", "--since", "1h", "--all-events", "--when", "body.n == 0", "-c", cfg, "--json"}, 0,
			[]string{`"enqueued":1`, `"done":true`}, nil},
		{"reload", []string{"reload", "-c", cfg}, 0, []string{"configuration reloaded\n"}, nil},
		{"reload needing a restart", []string{"reload", "-c", cfg}, 0, []string{"configuration reloaded, but for log.urls, admin.listen: these take effect only at a restart"}, nil},
		{"reload of a socket-activated listen", []string{"reload", "-c", cfg}, 0, []string{"configuration reloaded, but server.listen cannot change: systemd passes that listener (socket activation) and its socket unit owns the address: change ListenStream= there, then restart the socket unit\n"}, nil},
		{"reload refused", []string{"reload", "-c", cfg}, 1, nil, []string{"reload refused", "unknown key foo (HTTP 409)"}},
		{"reload refused json", []string{"reload", "-c", cfg, "--json"}, 1, []string{`{"error":"reload refused`, `"status":409}`}, nil},
		{"unreachable", []string{"sinks", "--admin", "http://127.0.0.1:1"}, 1, nil, []string{"is pipelined running?"}},
		// Usage errors.
		{"dlq retry neither", append([]string{"dlq", "retry", "slack"}, a...), 2, nil, []string{"give --id ID (one or more) or --all"}},
		{"dlq retry both", append([]string{"dlq", "retry", "slack", "--all", "--id", "x"}, a...), 2, nil, []string{"--all"}},
		{"dlq add without id", append([]string{"dlq", "add", "archive", "--reason", "x"}, a...), 2, nil, []string{"give --id ID (one or more)"}},
		{"dlq add all of a configured sink", append([]string{"dlq", "add", "archive", "--all"}, a...), 1, nil,
			[]string{"the sink is in the configuration", "give up on its events by id (--id ID), or remove the sink from the configuration", "(HTTP 409)"}},
		{"dlq add all and id", append([]string{"dlq", "add", "archive", "--all", "--id", "cli-0"}, a...), 2, nil,
			[]string{"give --id ID (one or more), or --all for the queue of a sink removed from the configuration", "usage:\n  pipelined dlq add SINK (--id ID ... | --all) [--reason TEXT]"}},
		{"dlq no sink", append([]string{"dlq", "list"}, a...), 2, nil, []string{"want 1 argument"}},
		{"replay no since", append([]string{"replay", "--sink", "archive"}, a...), 2, nil, []string{"--since is required: the oldest event to replay"}},
		{"bad state", append([]string{"events", "list", "--sink", "slack", "--state", "lost"}, a...), 2, nil, []string{`--state "lost"`}},
		{"bad time", append([]string{"events", "list", "--since", "yesterday"}, a...), 2, nil, []string{"--since"}},
		{"unknown flag", append([]string{"sinks", "--nope"}, a...), 2, nil, []string{"flag provided but not defined: -nope"}},
		{"unknown subcommand", []string{"events", "frob"}, 2, nil, []string{`unknown command "frob"`}},
		{"bad admin url", []string{"sinks", "--admin", "localhost"}, 2, nil, []string{"--admin"}},
		{"unset token env", append([]string{"reload", "--token-env", "PIPELINED_TEST_NOT_SET"}, anon...), 1, nil, []string{"PIPELINED_TEST_NOT_SET is empty or unset"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runPipelined(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("pipelined %s exit = %d, want %d\nstdout: %s\nstderr: %s", strings.Join(tt.args, " "), code, tt.wantCode, stdout, stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if tt.wantCode == 1 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("error output is not one line:\n%s", stderr)
			}
		})
	}
	if *reloads != 5 {
		t.Errorf("Reload called %d times, want 5", *reloads)
	}
	// The replays and the retry reached the queues the dispatchers read.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, err := l.Queue("slack").Fetch(ctx, 10)
	if err != nil || len(ds) != 2 || ds[0].Event.ID != "cli-0" || ds[1].Event.ID != "cli-1" {
		t.Errorf("slack Fetch after the CLI = %v, %v, want cli-0 (replayed) and cli-1 (retried)", ds, err)
	}
}

func TestAdminCLIJSON(t *testing.T) {
	srv, _, _ := adminServer(t)
	for _, args := range [][]string{
		{"sinks"}, {"events", "list"}, {"events", "show", "cli-0"}, {"dlq", "list", "slack"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
			code, stdout, stderr := runPipelined(t, append(args, "--json", "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(stdout), &v); err != nil {
				t.Errorf("--json output is not JSON: %v\n%s", err, stdout)
			}
		})
	}
}

func TestAdminURL(t *testing.T) {
	for in, want := range map[string]string{
		"":               "http://127.0.0.1:8081",
		"127.0.0.1:9000": "http://127.0.0.1:9000",
		"0.0.0.0:9000":   "http://127.0.0.1:9000",
		":9000":          "http://127.0.0.1:9000",
		"[::]:9000":      "http://[::1]:9000",
		"[::1]:9000":     "http://[::1]:9000",
	} {
		if got := adminURL(in); got != want {
			t.Errorf("adminURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// rebuildingLog is a log rebuilding its queues after a start, 7 of 30
// event records read, its last attempt failed.
type rebuildingLog struct{ *memlog.Log }

func (rebuildingLog) QueuesRebuilding() (pipeline.QueueRebuild, bool) {
	return pipeline.QueueRebuild{Read: 7, Total: 30, Err: "rebuild the queues: decode event 5: unexpected EOF"}, true
}

// TestSinksWhileRebuilding: during the rebuild of the queues after a
// start, `pipelined sinks` shows that the counts are not known yet (not
// zeros) and says how far the rebuild is.
func TestSinksWhileRebuilding(t *testing.T) {
	l := rebuildingLog{memlog.New()}
	t.Cleanup(func() { l.Close() })
	srv := httptest.NewServer(admin.Handler(admin.Options{Log: l, Token: []byte(cliToken),
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "archive", Plugin: "running", Breaker: "closed", Rebuilding: true}}, nil
		}}))
	t.Cleanup(srv.Close)
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	code, stdout, stderr := runPipelined(t, "sinks", "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"NAME     PLUGIN   BREAKER  PAUSED  READY       RETRYING  OLDEST_AGE_SECONDS  DEAD",
		"archive  running  closed   -       rebuilding  -         -                   -",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	for _, want := range []string{
		"the sinks' queues are being rebuilt after the start: 7 of about 30 events read",
		"its last attempt failed (it is tried again; see the daemon's log): rebuild the queues: decode event 5: unexpected EOF",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestSinksWhenTheQueueCannotBeCounted: when the log does not answer for
// a sink's queue (a JetStream stream without a quorum), `pipelined sinks`
// still shows the sinks, "unknown" for the counts, and why on stderr.
func TestSinksWhenTheQueueCannotBeCounted(t *testing.T) {
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	srv := httptest.NewServer(admin.Handler(admin.Options{Log: l, Token: []byte(cliToken),
		Sinks: func(context.Context) ([]admin.SinkStatus, error) {
			return []admin.SinkStatus{{Name: "archive", Plugin: "running", Breaker: "closed", QueueError: "jetstream: consumer: no quorum"}}, nil
		}}))
	t.Cleanup(srv.Close)
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	code, stdout, stderr := runPipelined(t, "sinks", "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if want := "archive  running  closed   -       unknown  -         -                   -"; !strings.Contains(stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, stdout)
	}
	if want := "sink archive: its queue could not be counted: jetstream: consumer: no quorum"; !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
}

// TestAdminTokenFileAsTheDaemonReadsIt: the CLI reads [admin] token_file
// as the daemon does, so that the unit's ExecReload (pipelined reload -c)
// gets the token: ${VAR} expanded (a systemd credential) and a relative
// path resolved against the file's directory, whatever the working
// directory.
func TestAdminTokenFileAsTheDaemonReadsIt(t *testing.T) {
	srv, _, _ := adminServer(t)
	listen := strings.TrimPrefix(srv.URL, "http://")
	dir, creds := t.TempDir(), t.TempDir()
	for _, p := range []string{filepath.Join(creds, "admin-token"), filepath.Join(dir, "secrets", "token")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(cliToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PIPELINED_TEST_CREDS", creds)
	t.Chdir(t.TempDir())
	for name, tokenFile := range map[string]string{"credential": "${PIPELINED_TEST_CREDS}/admin-token", "relative": "secrets/token"} {
		t.Run(name, func(t *testing.T) {
			cfg := filepath.Join(dir, name+".toml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[admin]\nlisten = %q\ntoken_file = %q\n", listen, tokenFile)), 0o600); err != nil {
				t.Fatal(err)
			}
			if code, _, stderr := runPipelined(t, "sinks", "-c", cfg); code != 0 {
				t.Errorf("pipelined sinks -c with token_file %q: exit %d, %s", tokenFile, code, stderr)
			}
		})
	}
}

// TestReloadWithoutAnAnswer: a reload that gets no answer in time fails,
// and says that it may have been applied all the same.
func TestReloadWithoutAnAnswer(t *testing.T) {
	was := reloadWait
	reloadWait = 100 * time.Millisecond
	t.Cleanup(func() { reloadWait = was })
	done := make(chan struct{})
	srv := httptest.NewServer(admin.Handler(admin.Options{Token: []byte(cliToken),
		Reload: func() (admin.ReloadResult, error) { <-done; return admin.ReloadResult{}, nil }})) // a reload that takes long
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	code, _, stderr := runPipelined(t, "reload", "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")
	if want := "no answer, so the reload may or may not have been applied: the daemon's log says which"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("reload without an answer: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
}

// TestEventShowFailures: `events show` prints each sink's latest failed
// attempts as a table of their own, as README says, where only the JSON
// had them; and why the sink's latest call did not attempt the event, which
// no attempt's error says.
func TestEventShowFailures(t *testing.T) {
	l := memlog.New()
	t.Cleanup(func() { l.Close() })
	ev := pipeline.Event{ID: "ev-1", Source: "callkaro", ReceivedAt: time.Now(), Body: []byte(`{}`)}
	if _, err := l.Append(context.Background(), []pipeline.Entry{{Event: ev, Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}}}); err != nil {
		t.Fatal(err)
	}
	q := l.Queue("crm")
	for i, msg := range []string{"503 from the CRM", "dial tcp: connection\nrefused"} {
		ds, err := q.Fetch(context.Background(), 1)
		if err != nil || len(ds) != 1 || ds[0].Attempt != i+1 {
			t.Fatalf("Fetch = %v, %v; want attempt %d", ds, err, i+1)
		}
		if err := q.Settle(context.Background(), []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now(), Err: msg}}); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := q.Fetch(context.Background(), 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch = %v, %v", ds, err)
	}
	if err := q.Settle(context.Background(), []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour),
		Err: "not sent: the receiver answered 503\nwith Retry-After", NotAttempted: true}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(admin.Handler(admin.Options{Log: l, Ready: func() error { return nil }, Token: []byte(cliToken)}))
	t.Cleanup(srv.Close)
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	code, out, errOut := runPipelined(t, "events", "show", "ev-1", "--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN")
	if code != 0 {
		t.Fatalf("events show: exit %d, %s", code, errOut)
	}
	i := strings.Index(out, "failures (the latest of each sink, oldest first):\n")
	if i < 0 || !regexp.MustCompile(`(?m)^  crm +1 +\S+ +503 from the CRM\n  crm +2 +\S+ +dial tcp: connection refused$`).MatchString(out[i:]) {
		t.Errorf("events show:\n%s\nwant a failures table with both attempts, oldest first", out)
	}
	if !regexp.MustCompile(`(?m)^not attempted at the sink's latest call \(no attempt counted\):\n  SINK +REASON\n  crm +not sent: the receiver answered 503 with Retry-After$`).MatchString(out) {
		t.Errorf("events show:\n%s\nwant the reason the latest call did not attempt it", out)
	}
}

// TestAdminCLIGiveUpAll: dlq add --all of a sink removed from the
// configuration moves its waiting events to its dead-letter queue with the
// reason; then sinks lists it with its dead letters, dlq retry says why it
// cannot, dlq drop --all deletes them, and the sink leaves the list.
func TestAdminCLIGiveUpAll(t *testing.T) {
	srv, l, _ := adminServer(t)
	a := []string{"--admin", srv.URL, "--token-env", "PIPELINED_TEST_ADMIN_TOKEN"}
	t.Setenv("PIPELINED_TEST_ADMIN_TOKEN", cliToken)
	var es []pipeline.Entry
	for i := range 3 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("crm-%d", i), Source: "callkaro", ReceivedAt: time.Now(), Body: []byte(`{}`), Auth: "none"},
			Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}})
	}
	if _, err := l.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		stdout   []string
		stderr   []string
	}{
		{"sinks before", []string{"sinks"}, 0, []string{"crm      removed                   -        -       3      0         "}, nil},
		{"dlq add all", []string{"dlq", "add", "crm", "--all", "--reason", "crm retired"}, 0,
			[]string{"gave up on 3 event(s) waiting for crm, a sink removed from the configuration: they are in its dead-letter queue now (pipelined dlq drop crm --all deletes them)\n"}, nil},
		{"dlq add all again", []string{"dlq", "add", "crm", "--all", "--json"}, 0, []string{`"action": "add"`, `"count": 0`, `"ids": []`}, nil},
		{"dlq add by id", []string{"dlq", "add", "crm", "--id", "crm-0"}, 1, nil, []string{"removed from the configuration", "--all", "(HTTP 409)"}},
		{"sinks after", []string{"sinks"}, 0, []string{"crm      removed                   -        -       0      0         -                   3 "}, nil},
		{"dlq list", []string{"dlq", "list", "crm"}, 0, []string{"crm-0", "crm-2", "given up by an operator: crm retired"}, nil},
		{"dlq retry", []string{"dlq", "retry", "crm", "--all"}, 1, nil, []string{"removed from the configuration: nothing would deliver its dead letters", "add the sink back", "(HTTP 409)"}},
		{"dlq drop all", []string{"dlq", "drop", "crm", "--all"}, 0, []string{"dropped 3 dead letter(s) of crm\n"}, nil},
		{"sinks gone", []string{"sinks"}, 0, []string{"tally"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runPipelined(t, append(tt.args, a...)...)
			if code != tt.wantCode {
				t.Fatalf("pipelined %v exit = %d, want %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, tt.wantCode, stdout, stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if tt.name == "sinks gone" && strings.Contains(stdout, "crm") {
				t.Errorf("sinks lists crm after its dead letters were dropped:\n%s", stdout)
			}
		})
	}
}
