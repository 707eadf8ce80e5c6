package admin_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
)

// clocklessLog hides memlog's RetryClock, as the JetStream log has none.
type clocklessLog struct{ *memlog.Log }

func (l clocklessLog) Queue(sink string) pipeline.Queue { return clocklessQueue{l.Log.Queue(sink)} }

type clocklessQueue struct{ pipeline.Queue }

// TestSinksNextRetry: GET /v1/sinks says, in next_retry_seconds, how long
// until the earliest of a sink's retries due later is due, and leaves the
// field out when none waits for a later retry, when the sink is paused or
// removed, when its counts are not known, and when the log cannot say.
func TestSinksNextRetry(t *testing.T) {
	const none = -1.0 // the field is absent
	for _, tt := range []struct {
		name  string
		retry []time.Duration // from now, one retrying event each
		ready int             // events never attempted
		st    func(*admin.SinkStatus)
		plain bool // the log is not a pipeline.RetryClock
		want  float64
	}{
		{name: "nothing waits", want: none},
		{name: "ready only", ready: 2, want: none},
		{name: "a retry in 40s", retry: []time.Duration{40 * time.Second}, want: 40},
		{name: "in an hour and in 40s", retry: []time.Duration{time.Hour, 40 * time.Second}, ready: 1, want: 40},
		{name: "after a Retry-After of an hour", retry: []time.Duration{time.Hour, time.Hour}, want: 3600},
		{name: "one due, one in an hour", retry: []time.Duration{-time.Minute, time.Hour}, want: 3600},
		{name: "all due", retry: []time.Duration{-time.Minute, -time.Second}, want: none},
		{name: "paused", retry: []time.Duration{40 * time.Second}, st: func(s *admin.SinkStatus) { s.Paused = true }, want: none},
		{name: "breaker open", retry: []time.Duration{time.Hour}, st: func(s *admin.SinkStatus) { s.Breaker, s.NextProbeSeconds = "open", 30 }, want: 3600},
		{name: "removed", retry: []time.Duration{40 * time.Second}, st: func(s *admin.SinkStatus) { s.Plugin = admin.PluginRemoved }, want: none},
		{name: "rebuilding", retry: []time.Duration{40 * time.Second}, st: func(s *admin.SinkStatus) { s.Rebuilding = true }, want: none},
		{name: "queue not counted", retry: []time.Duration{40 * time.Second}, st: func(s *admin.SinkStatus) { s.QueueError = "no quorum" }, want: none},
		{name: "log cannot say", retry: []time.Duration{40 * time.Second}, plain: true, want: none},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ml := memlog.New()
			t.Cleanup(func() { ml.Close() })
			var es []pipeline.Entry
			for i := range len(tt.retry) + tt.ready {
				es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("ev-%d", i), Source: "callkaro", ReceivedAt: t0, Body: []byte(`{}`)},
					Targets: []pipeline.Target{{Sink: "crm", Route: "all"}}})
			}
			if len(es) > 0 {
				if _, err := ml.Append(t.Context(), es); err != nil {
					t.Fatal(err)
				}
			}
			q := ml.Queue("crm")
			for _, d := range tt.retry {
				settleFirst(t, q, pipeline.Settlement{Outcome: pipeline.Retry, RetryAt: time.Now().Add(d), Err: "503"})
			}
			var l pipeline.Log = ml
			if tt.plain {
				l = clocklessLog{ml}
			}
			o := v1Options(l)
			o.Sinks = func(ctx context.Context) ([]admin.SinkStatus, error) {
				st, err := q.Stats(ctx)
				s := admin.SinkStatus{Name: "crm", Plugin: "running", Breaker: "closed", Ready: st.Ready, Retrying: st.Retrying}
				if tt.st != nil {
					tt.st(&s)
				}
				return []admin.SinkStatus{s}, err
			}
			r := call(t, admin.Handler(o), "GET", "/v1/sinks", "", "")
			if r.code != http.StatusOK {
				t.Fatalf("GET /v1/sinks = %d %s", r.code, r.body)
			}
			sink := into[struct{ Sinks []map[string]any }](t, r).Sinks[0]
			got, ok := sink["next_retry_seconds"].(float64)
			switch {
			case tt.want == none && ok:
				t.Errorf("GET /v1/sinks next_retry_seconds = %v, want it absent (%s)", got, r.body)
			case tt.want != none && (!ok || math.Abs(got-tt.want) > 2):
				t.Errorf("GET /v1/sinks next_retry_seconds = %v (present %v), want about %v (%s)", got, ok, tt.want, r.body)
			}
		})
	}
}
