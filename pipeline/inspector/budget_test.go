package inspector_test

import (
	"context"
	"fmt"
	"html"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/memlog"
	"github.com/pipelined/pipelined/pipeline/inspector"
)

// TestScanBudgetContinues: a when that matches nothing in a long log
// answers within about ScanBudget with a link that continues from where
// the page stopped, and following the links ends at the log's start.
func TestScanBudgetContinues(t *testing.T) {
	db := memlog.New()
	var es []pipeline.Entry
	for i := range 100000 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("ev-", i), Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(fmt.Sprintf(`{"x":%d}`, i))}})
	}
	if _, err := db.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	ao := admin.Options{Log: db, AllowUnauthenticated: true}
	srv := httptest.NewServer(inspector.New(inspector.Options{Admin: ao}))
	defer srv.Close()
	c := client(t)
	next := regexp.MustCompile(`href="(/ui/events\?[^"]+)">Continue the search`)
	u := srv.URL + "/ui/events?when=" + url.QueryEscape(`body.x == 99999 || body.x == 0`)
	var found []string
	pages := 0
	for ; ; pages++ {
		if pages > 1000 {
			t.Fatal("more than 1000 pages: the cursor does not move")
		}
		start := time.Now()
		_, page := get(t, c, u)
		if took := time.Since(start); took > 20*inspector.ScanBudget {
			t.Errorf("a page took %v, want about ScanBudget (%v)", took, inspector.ScanBudget)
		}
		for _, id := range []string{"ev-0", "ev-99999"} {
			if strings.Contains(page, `href="/ui/events/`+id+`"`) {
				found = append(found, id)
			}
		}
		m := next.FindStringSubmatch(page)
		if m == nil {
			break
		}
		if pages == 0 && !strings.Contains(page, "stopped after its scan budget") {
			t.Error("the first page does not say it stopped after its scan budget")
		}
		u = srv.URL + html.UnescapeString(m[1])
	}
	if pages == 0 {
		t.Error("one page looked at all 100000 events: the scan budget never stopped it")
	}
	if len(found) != 2 {
		t.Errorf("following the continue links found %v, want ev-0 and ev-99999", found)
	}
}

// TestScanBudgetBoundsAnExpensiveWhen: a when that costs milliseconds per
// event (within the rule budget) stops the page after about ScanBudget,
// not after a whole chunk of 50 events has been evaluated.
func TestScanBudgetBoundsAnExpensiveWhen(t *testing.T) {
	db := memlog.New()
	var es []pipeline.Entry
	for i := range 200 {
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprint("ev-", i), Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)}})
	}
	if _, err := db.Append(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(inspector.New(inspector.Options{Admin: admin.Options{Log: db, AllowUnauthenticated: true}}))
	defer srv.Close()
	// Premise: one evaluation of this when is slow (it builds a list of
	// 250,000 numbers, within the operation budget).
	when := `len(filter(1..250000, # > len(source))) < 0`
	prog, err := admin.CompileWhen(when)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := admin.MatchWhen(context.Background(), prog, &es[0].Event); err != nil {
		t.Fatalf("premise: MatchWhen = %v", err)
	}
	one := time.Since(t0)
	if one*50 < 3*inspector.ScanBudget {
		t.Skipf("premise: one evaluation took %v, too fast to tell a chunk from the budget", one)
	}
	_, page := get(t, client(t), srv.URL+"/ui/events?when="+url.QueryEscape(when))
	m := regexp.MustCompile(`(\d+) looked at`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the page does not say how many events it looked at:\n%s", page)
	}
	var scanned int
	fmt.Sscan(m[1], &scanned)
	// Within the budget fit about ScanBudget/one evaluations (twice that
	// for a margin), plus the one that crosses it.
	if limit := int(2*inspector.ScanBudget/one) + 2; scanned > limit {
		t.Errorf("the page looked at %d events at %v each, want at most %d (ScanBudget %v)", scanned, one, limit, inspector.ScanBudget)
	}
	if !strings.Contains(page, "stopped after its scan budget") {
		t.Error("the page does not say it stopped after its scan budget")
	}
}
