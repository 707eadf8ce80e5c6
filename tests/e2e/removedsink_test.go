package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/tests/harness"
)

// TestRenamedSinkQueueGivenUpWhole: a sink renamed while the daemon was
// stopped leaves three events in its old queue, one of them retrying
// after a failed attempt. `dlq add OLD --all --reason` moves all three to
// its dead-letter queue with the reason, and they stay there across a
// restart; dlq retry says why it cannot deliver them; `dlq drop OLD --all`
// deletes them, and the old name leaves `pipelined sinks`, after a
// restart too. The configured sink's queue cannot be given up on whole,
// and nothing reaches the CRM. A second removed sink, zz-old, keeps its
// events throughout: the start lists the removed sinks in name order, so
// once zz-old is listed after a restart, crm would have been too.
func TestRenamedSinkQueueGivenUpWhole(t *testing.T) {
	harness.SkipIfShort(t)
	crm := harness.NewReceiver(t)
	crm.SetAnswer(harness.Answer(http.StatusServiceUnavailable))
	dir := t.TempDir()
	sink := func(names ...string) string {
		s := callKaroHeader(filepath.Join(dir, "log"))
		for _, name := range names {
			s += harness.HTTPSink(name, crm.URL, `batch_wait = "5ms", backoff_min = "1h", backoff_max = "2h"`)
		}
		return s + harness.AllCallsRoute(names...)
	}
	cfgFile := harness.WriteConfig(t, dir, sink("crm", "zz-old"))
	d := harness.Start(t, cfgFile)
	d.CLI(t, "sinks", "pause", "zz-old")
	ids := postCalls(t, d, "given-up-whole", 1)
	harness.Eventually(t, 20*time.Second, func() error {
		if s := d.Sinks(t)["crm"]; s.Retrying != 1 {
			return fmt.Errorf("crm has %d retrying, want the first call after its failed attempt", s.Retrying)
		}
		return nil
	})
	d.CLI(t, "sinks", "pause", "crm")
	ids = append(ids, postCalls(t, d, "given-up-whole-paused", 2)...)
	d.Kill(syscall.SIGTERM)

	cfgFile = harness.WriteConfig(t, dir, sink("crm-v2"))
	d = harness.Start(t, cfgFile)
	harness.Eventually(t, 20*time.Second, func() error {
		if s, ok := d.Sinks(t)["crm"]; !ok || s.Plugin != "removed" || s.Ready != 2 || s.Retrying != 1 {
			return fmt.Errorf("pipelined sinks lists crm as %+v (listed: %v), want removed with 2 ready and 1 retrying", s, ok)
		}
		if s := d.Sinks(t)["zz-old"]; s.Ready != 3 {
			return fmt.Errorf("pipelined sinks lists zz-old as %+v, want removed with 3 ready", s)
		}
		return nil
	})
	var apiErr *admin.APIError
	if _, err := d.Admin().SettleDead(t.Context(), "add", "crm-v2", admin.DeadLetterRequest{All: true}); !errors.As(err, &apiErr) ||
		apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, "by id") {
		t.Errorf("dlq add crm-v2 --all (configured) = %v, want 409 that says to give up by id", err)
	}
	// retry-now is refused too: nothing delivers crm's queue, whose retry
	// stays as it was.
	if _, err := d.Admin().RetryNow(t.Context(), "crm"); !errors.As(err, &apiErr) ||
		apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, "nothing delivers its queue") {
		t.Errorf("sinks retry-now crm (removed) = %v, want 409 that says nothing delivers its queue", err)
	}
	if s := d.Sinks(t)["crm"]; s.Retrying != 1 {
		t.Errorf("after a refused retry-now: crm %+v, want its retry still waiting", s)
	}

	out := d.CLI(t, "dlq", "add", "crm", "--all", "--reason", "crm retired, ticket 9")
	if !strings.Contains(out, "gave up on 3 event(s) waiting for crm, a sink removed from the configuration") {
		t.Errorf("dlq add crm --all = %q", out)
	}
	d.WaitLog(t, "events of a removed sink given up on", 1, 5*time.Second) // the pipe may lag the answer
	wantDead := func(when string) {
		t.Helper()
		harness.Eventually(t, 20*time.Second, func() error {
			if s, ok := d.Sinks(t)["crm"]; !ok || s.Plugin != "removed" || s.Ready != 0 || s.Retrying != 0 || s.Dead != 3 {
				return fmt.Errorf("pipelined sinks %s lists crm as %+v (listed: %v), want removed with 3 dead and nothing waiting", when, s, ok)
			}
			return nil
		})
		dls := d.DeadLetters(t, "crm")
		if len(dls) != 3 {
			t.Fatalf("crm's dead letters %s = %+v, want the 3 calls", when, dls)
		}
		for _, dl := range dls {
			want := "given up by an operator: crm retired, ticket 9"
			if dl.ID == ids[0] {
				want += " (last error: "
				if dl.Attempts != 1 {
					t.Errorf("the first call's dead letter %s: %d attempts, want 1 (giving up costs none)", when, dl.Attempts)
				}
			} else if dl.Error != want || dl.Attempts != 0 {
				t.Errorf("dead letter %s %s: %q, %d attempts; want %q, none", dl.ID, when, dl.Error, dl.Attempts, want)
			}
			if !strings.HasPrefix(dl.Error, want) {
				t.Errorf("dead letter %s %s: %q, want it to start with %q", dl.ID, when, dl.Error, want)
			}
		}
	}
	wantDead("after dlq add --all")
	if _, err := d.Admin().SettleDead(t.Context(), "retry", "crm", admin.DeadLetterRequest{All: true}); !errors.As(err, &apiErr) ||
		apiErr.Status != http.StatusConflict || !strings.Contains(apiErr.Message, "nothing would deliver its dead letters") {
		t.Errorf("dlq retry crm --all (removed) = %v, want 409 that says nothing would deliver them", err)
	}

	d.Kill(syscall.SIGTERM)
	d = harness.Start(t, cfgFile)
	wantDead("after a restart")

	if out := d.CLI(t, "dlq", "drop", "crm", "--all"); !strings.Contains(out, "dropped 3 dead letter(s) of crm") {
		t.Errorf("dlq drop crm --all = %q", out)
	}
	harness.Eventually(t, 10*time.Second, func() error {
		if s, ok := d.Sinks(t)["crm"]; ok {
			return fmt.Errorf("pipelined sinks still lists crm after its dead letters were dropped: %+v", s)
		}
		return nil
	})
	d.Kill(syscall.SIGTERM)
	d = harness.Start(t, cfgFile)
	harness.Eventually(t, 20*time.Second, func() error {
		if s := d.Sinks(t)["zz-old"]; s.Plugin != "removed" || s.Ready != 3 {
			return fmt.Errorf("pipelined sinks lists zz-old as %+v after the restart, want removed with 3 ready (the premise)", s)
		}
		return nil
	})
	if s, ok := d.Sinks(t)["crm"]; ok {
		t.Errorf("pipelined sinks lists crm after a restart, with nothing in its queue: %+v", s)
	}
	if strings.Contains(d.Log(), `"sink":"crm"`) {
		t.Errorf("the start's log still names crm:\n%s", d.Log())
	}
	if got := crm.Accepted(); len(got) != 0 {
		t.Errorf("the CRM took %v, want nothing", got)
	}
}
