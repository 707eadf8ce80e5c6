package admin_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// TestClient runs every call of the client against the handler over the
// fixture's log: what the CLI and the test suites read is what the server
// writes.
func TestClient(t *testing.T) {
	srv := httptest.NewServer(admin.Handler(v1Options(fixture(t))))
	t.Cleanup(srv.Close)
	ctx := t.Context()
	c := admin.NewClient(srv.URL+"/", token, nil)
	anon := admin.NewClient(srv.URL, "", srv.Client())

	sinks, err := c.Sinks(ctx)
	if err != nil || len(sinks) != 2 || sinks[0].Name != "archive" || sinks[1].Name != "slack" || sinks[1].Dead != 2 {
		t.Errorf("Sinks = %+v, %v; want archive and slack with 2 dead", sinks, err)
	}
	if s, err := c.Sink(ctx, "slack"); err != nil || s.Dead != 2 {
		t.Errorf("Sink(slack) = %+v, %v; want 2 dead", s, err)
	}
	if _, err := c.Sink(ctx, "nope"); err == nil {
		t.Errorf("Sink(nope) = nil error, want one")
	}

	list, err := c.Events(ctx, url.Values{"source": {"stripe"}, "limit": {"2"}})
	if err != nil || len(list.Events) != 2 || list.Events[0].ID != "ev-1" || list.Next == "" {
		t.Errorf("Events(source=stripe, limit=2) = %+v, %v; want ev-1, ev-3 and a next cursor", list, err)
	}
	if e, err := c.Event(ctx, "ev-2"); err != nil || e.ID != "ev-2" || e.Source != "callkaro" {
		t.Errorf("Event(ev-2) = %+v, %v", e, err)
	}
	_, err = c.Event(ctx, "nope")
	var apiErr *admin.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Errorf("Event(nope) = %v, want an APIError with status 404", err)
	}

	dls, err := c.AllDeadLetters(ctx, "slack")
	var ids []string
	for _, d := range dls {
		ids = append(ids, d.ID)
	}
	if err != nil || !slices.Equal(ids, []string{"ev-1", "ev-3"}) {
		t.Errorf("AllDeadLetters(slack) = %v, %v; want ev-1, ev-3", ids, err)
	}
	page, err := c.DeadLetters(ctx, "slack", url.Values{"limit": {"1"}})
	if err != nil || len(page.DeadLetters) != 1 || page.Next == "" {
		t.Errorf("DeadLetters(slack, limit=1) = %+v, %v; want one and a next page", page, err)
	}

	// Reads and mutating calls need the token.
	if _, err := anon.Sinks(ctx); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		t.Errorf("Sinks without a token = %v, want an APIError with status 401", err)
	}
	_, err = anon.SettleDead(ctx, "retry", "slack", admin.DeadLetterRequest{All: true})
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		t.Errorf("SettleDead without a token = %v, want an APIError with status 401", err)
	}
	var raw []byte
	res, err := c.WithRaw(&raw).SettleDead(ctx, "retry", "slack", admin.DeadLetterRequest{IDs: []string{"ev-1", "ev-9"}})
	if err != nil || res.Count != 1 || !slices.Equal(res.NotFound, []string{"ev-9"}) || len(raw) == 0 {
		t.Errorf("SettleDead(retry ev-1 ev-9) = %+v, %v (raw %q); want 1 retried, ev-9 not found, the raw answer kept", res, err, raw)
	}
	if _, err := c.SettleDead(ctx, "bury", "slack", admin.DeadLetterRequest{All: true}); err == nil {
		t.Errorf("SettleDead(bury) = nil error, want one")
	}

	var lines int
	last, err := c.Replay(ctx, admin.ReplayRequest{Sink: "archive", Since: "2025-03-14T15:00:00Z", Until: "2025-03-14T16:00:00Z"},
		func(admin.ReplayProgress) { lines++ })
	if err != nil || !last.Done || last.Matched != 3 || lines == 0 {
		t.Errorf("Replay(archive) = %+v, %v after %d lines; want done, 3 matched", last, err, lines)
	}

	// The fixture's options have no Reload: 501.
	if _, err := c.Reload(ctx); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotImplemented {
		t.Errorf("Reload = %v, want an APIError with status 501", err)
	}

	// A daemon that is not there: the transport's error, wrapped.
	srv.Close()
	_, err = anon.Sinks(ctx)
	var urlErr *url.Error
	if !errors.As(err, &urlErr) {
		t.Errorf("Sinks of a closed server = %v, want a *url.Error", err)
	}
}
