package inspector_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/dispatch"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
)

// removedSinkUI serves the UI, behind a token, over a memlog whose sink
// "old" a reload removed (listed as removed while its queue holds
// anything, as the daemon lists it) with three events waiting, one of
// them retrying, and whose sink "crm" is configured. canGiveUp false is
// the JetStream backend. It returns the UI's URL, a logged-in client, the
// log and the ids of old's events.
func removedSinkUI(t *testing.T, canGiveUp bool) (string, *http.Client, *memlog.Log, []string) {
	t.Helper()
	db := memlog.New()
	ctx := context.Background()
	var entries []pipeline.Entry
	for i := range 3 {
		entries = append(entries, pipeline.Entry{
			Event:   pipeline.Event{ID: fmt.Sprintf("ev-%d", i), Source: "callkaro", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "old", Route: "all"}, {Sink: "crm", Route: "all"}},
		})
	}
	ap, err := db.Append(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	q := db.Queue("old")
	ds, err := q.Fetch(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Fetch = %d, %v", len(ds), err)
	}
	if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[0].Seq, Outcome: pipeline.Retry, RetryAt: time.Now().Add(time.Hour), Err: "503 Service Unavailable"}}); err != nil {
		t.Fatal(err)
	}
	var set dispatch.GiveUps
	ao := admin.Options{
		Log: db,
		Sinks: func(ctx context.Context) ([]admin.SinkStatus, error) {
			out := []admin.SinkStatus{{Name: "crm", Plugin: "running"}}
			st, err := db.Queue("old").Stats(ctx)
			if err != nil {
				return nil, err
			}
			if st.Ready+st.Retrying+st.Dead > 0 {
				out = append(out, admin.SinkStatus{Name: "old", Plugin: admin.PluginRemoved, Ready: st.Ready, Retrying: st.Retrying, Dead: st.Dead})
			}
			return out, nil
		},
		Token: []byte("s3cret"),
	}
	if canGiveUp {
		ao.GiveUps = func(sink string) admin.GiveUpSet {
			if sink == "old" {
				return nil // removed: nothing delivers its queue
			}
			return &set
		}
	}
	ao.UI = inspector.New(inspector.Options{Admin: ao, SinkNames: func() []string { return []string{"crm"} }})
	srv := httptest.NewServer(admin.Handler(ao))
	t.Cleanup(srv.Close)
	c := client(t)
	resp, err := c.PostForm(srv.URL+"/ui/login", url.Values{"token": {"s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var ids []string
	for _, a := range ap {
		ids = append(ids, a.ID)
	}
	return srv.URL, c, db, ids
}

// postForm posts form to u with c and returns the answer's status and body.
func postForm(t *testing.T, c *http.Client, u string, form url.Values) (int, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestRemovedSinkInTheUI: the UI does for a sink removed from the
// configuration what the CLI does. The overview and the dead-letter index
// list it as removed, with what waits in its queue; its dead-letter page
// says so, and gives up on every waiting event with a reason (the CSRF
// token required, as on every form); its dead letters are listed and
// dropped, and retry is not offered but explained (and refused if posted
// all the same); the event page has no retry button for it but a link;
// once nothing is left, the sink leaves the lists.
func TestRemovedSinkInTheUI(t *testing.T) {
	base, c, db, ids := removedSinkUI(t, true)
	ctx := context.Background()
	old := db.Queue("old")

	if _, body := get(t, c, base+"/ui/"); !strings.Contains(body, `<span class="badge bad">removed</span><div class="small"><a href="/ui/dlq/old">`) {
		t.Errorf("the overview does not show old as removed with a link to its queue:\n%s", body)
	}
	if _, body := get(t, c, base+"/ui/dlq"); !strings.Contains(body, `<a href="/ui/dlq/old">old</a> <span class="badge bad">removed</span><div class="small">not in the configuration: 3 waiting</div>`) {
		t.Errorf("the dead-letter index does not show old as removed with 3 waiting:\n%s", body)
	}
	resp, page := get(t, c, base+"/ui/dlq/old")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/dlq/old = %d, want 200:\n%s", resp.StatusCode, page)
	}
	for _, want := range []string{
		`<strong id="waiting">3 events</strong> wait in it (1 after a failed attempt).`,
		`<button type="submit" name="action" value="giveup" class="danger">Give up on all waiting events</button>`,
		`<input id="giveup-reason" name="reason" maxlength="500"`,
		`Retry is not offered: sink &#34;old&#34; was removed from the configuration: nothing would deliver its dead letters`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("old's dead-letter page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, `value="retry"`) {
		t.Errorf("old's dead-letter page has a retry button:\n%s", page)
	}
	if _, body := get(t, c, base+"/ui/events/"+ids[0]); !strings.Contains(body, `old is not in the configuration: nothing delivers to it`) ||
		strings.Count(body, `/giveup"`) != 1 || !strings.Contains(body, `<a href="/ui/dlq/old">Its queue and dead letters</a>`) {
		t.Errorf("the event page does not send old's actions to its queue's page (a give-up button for crm only):\n%s", body)
	}

	csrf := csrfRE.FindStringSubmatch(page)[1]
	giveUp := url.Values{"action": {"giveup"}, "all": {"1"}, "reason": {"sink retired, ticket 7"}}
	if code, _ := postForm(t, c, base+"/ui/dlq/old", giveUp); code != http.StatusForbidden {
		t.Errorf("POST give up without the CSRF token = %d, want 403", code)
	}
	if st, _ := old.Stats(ctx); st != (pipeline.QueueStats{Ready: 2, Retrying: 1}) {
		t.Fatalf("old's queue after the refused POST = %+v, want all 3 still waiting", st)
	}
	giveUp.Set("csrf", csrf)
	body := act(t, c, base, "/ui/dlq/old", giveUp, "/ui/dlq/old")
	if got := flashOf(body); got != "Gave up on 3 waiting event(s) of old: they are in its dead-letter queue." {
		t.Fatalf("POST give up on all shows %q, want that 3 were moved", got)
	}
	if st, _ := old.Stats(ctx); st != (pipeline.QueueStats{Dead: 3}) {
		t.Errorf("old's queue after the give-up = %+v, want 3 dead letters and nothing waiting", st)
	}
	if n := strings.Count(body, `given up by an operator: sink retired, ticket 7`); n != 3 {
		t.Errorf("the page after the give-up lists %d dead letters with the reason, want 3:\n%s", n, body)
	}
	if !strings.Contains(body, "No event waits in it.") || strings.Contains(body, `value="giveup"`) {
		t.Errorf("the page after the give-up still offers to give up:\n%s", body)
	}

	code, body := postForm(t, c, base+"/ui/dlq/old", url.Values{"csrf": {csrf}, "action": {"retry"}, "all": {"1"}})
	if code != http.StatusConflict || !strings.Contains(body, "add the sink back") {
		t.Errorf("POST retry all of old = %d, want 409 that says to add the sink back:\n%s", code, body)
	}
	if st, _ := old.Stats(ctx); st.Dead != 3 {
		t.Errorf("old's queue after the refused retry = %+v, want its 3 dead letters", st)
	}

	code, body = postForm(t, c, base+"/ui/dlq/old", url.Values{"csrf": {csrf}, "action": {"drop"}, "all": {"1"}})
	if code != http.StatusOK || !strings.Contains(body, "Drop every dead letter of <strong>old</strong>?") {
		t.Fatalf("POST drop all of old = %d, want the confirmation page:\n%s", code, body)
	}
	body = act(t, c, base, "/ui/dlq/old", url.Values{"csrf": {csrf}, "action": {"drop"}, "all": {"1"}, "confirm": {"yes"}}, "/ui/dlq")
	if flashOf(body) != "Dropped 3 dead letter(s) of old. Nothing is left of it, so it is no longer listed." || strings.Contains(body, `href="/ui/dlq/old"`) {
		t.Fatalf("POST drop all of old, confirmed, leads to the index showing %q, want it without old, and why:\n%s", flashOf(body), body)
	}
	if st, _ := old.Stats(ctx); st != (pipeline.QueueStats{}) {
		t.Errorf("old's queue after the drop = %+v, want empty", st)
	}
	if resp, _ := get(t, c, base+"/ui/dlq/old"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/dlq/old once nothing is left = %d, want 404", resp.StatusCode)
	}
}

// TestRemovedSinkWithoutGiveUps: on a daemon that cannot give up on events
// (the JetStream backend) a removed sink's page says why instead of
// offering the button.
func TestRemovedSinkWithoutGiveUps(t *testing.T) {
	base, c, _, _ := removedSinkUI(t, false)
	_, page := get(t, c, base+"/ui/dlq/old")
	if !strings.Contains(page, "Giving up on them is not offered: this daemon cannot give up on events") || strings.Contains(page, `value="giveup"`) {
		t.Errorf("old's page on a daemon without give-ups:\n%s", page)
	}
}
