package badgerlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

// TestEventsNewestFirst pages through the log newest first, with and
// without a filter, and checks that the pages join up without a gap or a
// repeat.
func TestEventsNewestFirst(t *testing.T) {
	db := open(t, t.TempDir())
	defer db.Close()
	ctx := context.Background()
	var es []pipeline.Entry
	for i := range 25 {
		src := "a"
		if i%5 == 0 {
			src = "b"
		}
		es = append(es, pipeline.Entry{Event: pipeline.Event{ID: fmt.Sprintf("ev-%02d", i), Source: src, ReceivedAt: time.Now(), Body: []byte(`{}`)}})
	}
	if _, err := db.Append(ctx, es); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		source string
		want   []int
	}{
		{"all", "", []int{24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"source b", "b", []int{20, 15, 10, 5, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			f := pipeline.EventFilter{Source: tc.source, Limit: 4}
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatal("more than 20 pages: the cursor does not move")
				}
				page, next, err := db.EventsNewestFirst(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range page {
					got = append(got, e.ID)
				}
				if next == "" {
					break
				}
				f.After = next
			}
			var want []string
			for _, i := range tc.want {
				want = append(want, fmt.Sprintf("ev-%02d", i))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("EventsNewestFirst(source %q) = %v, want %v", tc.source, got, want)
			}
		})
	}
	// An id lookup honours the cursor as Events does.
	page, _, err := db.EventsNewestFirst(ctx, pipeline.EventFilter{ID: "ev-03"})
	if err != nil || len(page) != 1 {
		t.Errorf("EventsNewestFirst(id ev-03) = %d events, %v; want it", len(page), err)
	}
}
