package jetstreamlog_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pipelined/pipelined/pipeline"
)

// TestDeadLettersReadOnlyThePage: a page of the DLQ reads the dead letters
// it returns and about nothing else, whatever the DLQ's size; so do
// RetryDead and DropDead of chosen seqs, and DropDead of all. The DLQ
// holds both kinds of dead letter, interleaved in log order: half written
// by Append (a failed transform), half by Settle, which kills them in the
// reverse of log order. The cost is what the server sent and how many
// requests it got (its own counters, so no hook and no timing).
func TestDeadLettersReadOnlyThePage(t *testing.T) {
	s := startServer(t)
	l := open(t, s.ClientURL(), "DLQ")
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const (
		n    = 40
		size = 128 << 10 // each event's body; a dead letter holds it base64
	)
	pad := strings.Repeat("x", size)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("dl-%02d", i)
		target := pipeline.Target{Sink: "crm", Route: "r"}
		if i%2 == 0 {
			target.Err = "transform: boom " + ids[i]
		}
		e := pipeline.Entry{
			Event:   pipeline.Event{ID: ids[i], Source: "s", ReceivedAt: time.Now().UTC(), Body: []byte(`{"pad":"` + pad + `"}`)},
			Targets: []pipeline.Target{target},
		}
		if _, err := l.Append(ctx, []pipeline.Entry{e}); err != nil {
			t.Fatalf("Append(%s) = %v", ids[i], err)
		}
	}
	q := l.Queue("crm")
	var ds []pipeline.Delivery
	for len(ds) < n/2 {
		got, err := q.Fetch(ctx, n)
		if err != nil {
			t.Fatalf("Fetch = %v after %d of %d", err, len(ds), n/2)
		}
		ds = append(ds, got...)
	}
	for i := len(ds) - 1; i >= 0; i-- {
		if err := q.Settle(ctx, []pipeline.Settlement{{Seq: ds[i].Seq, Outcome: pipeline.Dead, Err: "gave up"}}); err != nil {
			t.Fatalf("Settle(Dead %d) = %v", ds[i].Seq, err)
		}
	}

	all, err := q.DeadLetters(ctx, 0, 2*n)
	if err != nil || len(all) != n {
		t.Fatalf("DeadLetters(0, %d) = %d entries, %v, want %d", 2*n, len(all), err, n)
	}
	for i, d := range all {
		if d.Event.ID != ids[i] || (i > 0 && d.Seq <= all[i-1].Seq) {
			t.Fatalf("DeadLetters(0, %d)[%d] = %s at Seq %d, want %s in log order", 2*n, i, d.Event.ID, d.Seq, ids[i])
		}
		if len(d.Event.Body) != len(pad)+len(`{"pad":""}`) {
			t.Fatalf("DeadLetters(0, %d)[%d].Event.Body is %d bytes, want %d", 2*n, i, len(d.Event.Body), len(pad)+len(`{"pad":""}`))
		}
	}

	// A dead letter costs about 16/9 of its body on the wire (base64 in
	// the record, and the record base64 in the get's answer): 40 of them
	// are about 9 MiB, which is what a read of the whole DLQ costs.
	letter := uint64(size) * 16 / 9
	cost := func(what string, maxLetters uint64, maxRequests int64, f func()) {
		t.Helper()
		before := varz(t, s)
		f()
		after := varz(t, s)
		sent, requests := after.OutBytes-before.OutBytes, after.InMsgs-before.InMsgs
		if uint64(sent) > maxLetters*letter+8<<10 || requests > maxRequests { // 8 KiB: the answers' own bytes
			t.Errorf("%s: the server sent %d bytes (%.1f dead letters) for %d requests, want at most %d dead letters and %d requests",
				what, sent, float64(sent)/float64(letter), requests, maxLetters, maxRequests)
		}
	}
	pages := []struct {
		after uint64
		limit int
		want  []pipeline.DeadLetter
	}{
		{0, 2, all[:2]},                       // one of each kind
		{all[19].Seq, 3, all[20:23]},          // from the middle
		{all[n-3].Seq, 5, all[n-2:]},          // the end, short
		{all[n-1].Seq, 5, nil},                // after the last
		{all[4].Seq - 1, 1, all[4:5]},         // after is not a dead letter's seq
		{all[6].Seq + 1, 2, all[7:9]},         // nor here
		{0, 0, nil},                           // a limit less than 1
		{all[10].Seq, n, all[11:]},            // more than there is
		{all[1].Seq, 1, all[2:3]},             // Append's, right after Settle's
		{all[0].Seq, 1, all[1:2]},             // Settle's, right after Append's
		{all[n-2].Seq - 1, 1, all[n-2 : n-1]}, // the last Append wrote
	}
	for _, p := range pages {
		var got []pipeline.DeadLetter
		// A page costs its dead letters and one more at most (the walk
		// of Append's stops at the first that does not fit), plus what
		// the walk steps over at after.
		cost(fmt.Sprintf("DeadLetters(%d, %d)", p.after, p.limit), uint64(len(p.want))+2, int64(len(p.want))+6, func() {
			got, err = q.DeadLetters(ctx, p.after, p.limit)
		})
		if err != nil {
			t.Fatalf("DeadLetters(%d, %d) = %v", p.after, p.limit, err)
		}
		if !sameSeqs(got, p.want) {
			t.Errorf("DeadLetters(%d, %d) = %v, want %v", p.after, p.limit, seqsOf(got), seqsOf(p.want))
		}
	}

	// Chosen seqs: a get or two each, and the queue entries they write.
	var retried int
	cost("RetryDead(2 seqs and an unknown one)", 6, 16, func() {
		retried, err = q.RetryDead(ctx, []uint64{all[8].Seq, all[9].Seq, all[n-1].Seq + 1000})
	})
	if err != nil || retried != 2 {
		t.Errorf("RetryDead(2 seqs and an unknown one) = %d, %v, want 2, nil", retried, err)
	}
	var dropped int
	cost("DropDead(2 seqs, a repeat)", 4, 12, func() {
		dropped, err = q.DropDead(ctx, []uint64{all[12].Seq, all[13].Seq, all[13].Seq})
	})
	if err != nil || dropped != 2 {
		t.Errorf("DropDead(2 seqs, a repeat) = %d, %v, want 2, nil", dropped, err)
	}
	page, err := q.DeadLetters(ctx, all[7].Seq, 4)
	if want := []pipeline.DeadLetter{all[10], all[11], all[14], all[15]}; err != nil || !sameSeqs(page, want) {
		t.Errorf("DeadLetters(%d, 4) after RetryDead and DropDead = %v, %v, want %v", all[7].Seq, seqsOf(page), err, seqsOf(want))
	}
	cost("DropDead(nil)", 1, 4, func() {
		dropped, err = q.DropDead(ctx, nil)
	})
	if err != nil || dropped != n-4 {
		t.Errorf("DropDead(nil) = %d, %v, want %d, nil", dropped, err, n-4)
	}
	if got, err := q.DeadLetters(ctx, 0, n); err != nil || len(got) != 0 {
		t.Errorf("DeadLetters after DropDead(nil) = %v, %v, want none", seqsOf(got), err)
	}
}

func varz(t *testing.T, s *server.Server) *server.Varz {
	t.Helper()
	v, err := s.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func seqsOf(ds []pipeline.DeadLetter) []uint64 {
	out := make([]uint64, len(ds))
	for i, d := range ds {
		out[i] = d.Seq
	}
	return out
}

func sameSeqs(a, b []pipeline.DeadLetter) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Seq != b[i].Seq || a[i].Event.ID != b[i].Event.ID {
			return false
		}
	}
	return true
}
