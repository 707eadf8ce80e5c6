package jetstreamlog_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelined/pipelined/pipeline"
)

// TestEarlierBuildsDeadLettersAreMoved: dead letters that an earlier build's
// Settle wrote on P.dlq.<sink>.<id> are missed by pages of one (they are
// not in log order there); the next Open moves them, and every page finds
// them, in log order.
func TestEarlierBuildsDeadLettersAreMoved(t *testing.T) {
	url := runServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := open(t, url, "MIG")
	var ids []string
	for i := range 3 {
		ids = append(ids, fmt.Sprintf("mig-%d", i))
		e := pipeline.Entry{Event: pipeline.Event{ID: ids[i], Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{}`)},
			Targets: []pipeline.Target{{Sink: "crm", Route: "r"}}}
		if _, err := l.Append(ctx, []pipeline.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	q := l.Queue("crm")
	var ds []pipeline.Delivery
	for len(ds) < 3 {
		got, err := q.Fetch(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, got...)
	}
	for i := len(ds) - 1; i >= 0; i-- { // the last dies first
		if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[i].Seq, Outcome: pipeline.Dead, Err: "gave up"}}); err != nil {
			t.Fatal(err)
		}
	}
	// As an earlier build stored them: on P.dlq.crm.<id>, in the order
	// they died.
	js := jsClient(t, url)
	st, err := js.Stream(ctx, "MIG")
	if err != nil {
		t.Fatal(err)
	}
	for i := len(ds) - 1; i >= 0; i-- {
		m, err := st.GetLastMsgForSubject(ctx, fmt.Sprintf("MIG.dlq.crm.seq.%d", ds[i].Seq))
		if err != nil {
			t.Fatal(err)
		}
		old := nats.NewMsg("MIG.dlq.crm." + ds[i].Event.ID)
		for k, v := range m.Header {
			if !strings.HasPrefix(k, "Nats-") { // the batch publish's own
				old.Header[k] = v
			}
		}
		old.Data = m.Data
		if _, err := js.PublishMsg(ctx, old); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
			t.Fatal(err)
		}
	}
	pages := func() []string {
		t.Helper()
		var got []string
		for after := uint64(0); ; {
			page, err := q.DeadLetters(ctx, after, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				return got
			}
			got, after = append(got, page[0].Event.ID), page[0].Seq
		}
	}
	if got := pages(); fmt.Sprint(got) == fmt.Sprint(ids) {
		t.Fatalf("premise: pages of one found %v before the move; want some missed", got)
	}
	l.Close()

	l = open(t, url, "MIG")
	defer l.Close()
	q = l.Queue("crm")
	deadline := time.Now().Add(20 * time.Second)
	for got := pages(); fmt.Sprint(got) != fmt.Sprint(ids); got = pages() {
		if time.Now().After(deadline) {
			t.Fatalf("pages of one after the reopen = %v, want %v", got, ids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info, err := st.Info(ctx, jetstream.WithSubjectFilter("MIG.dlq.crm.*")); err != nil || len(info.State.Subjects) != 0 {
		t.Errorf("dead letters left on P.dlq.crm.<id>: %v (%v)", info.State.Subjects, err)
	}
	if s, err := q.Stats(ctx); err != nil || s.Dead != 3 {
		t.Errorf("Stats after the move = %+v, %v; want 3 dead", s, err)
	}
}
