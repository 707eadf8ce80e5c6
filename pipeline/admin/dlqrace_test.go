package admin_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/admin"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// beforeDropLog is a log whose queues run before, once, when a drop of
// dead letters starts: after the walk of dlq drop --all read its page,
// before the log drops it. Its queues are Holders, as the log's are.
type beforeDropLog struct {
	pipeline.Log
	once   sync.Once
	before func()
}

func (l *beforeDropLog) Queue(sink string) pipeline.Queue {
	return &beforeDropQueue{Holder: l.Log.Queue(sink).(pipeline.Holder), l: l}
}

type beforeDropQueue struct {
	pipeline.Holder
	l *beforeDropLog
}

func (q *beforeDropQueue) DropDead(ctx context.Context, seqs []uint64) (int, error) {
	q.l.once.Do(q.l.before)
	return q.Holder.DropDead(ctx, seqs)
}

func (q *beforeDropQueue) DropDeadSeqs(ctx context.Context, seqs []uint64) ([]uint64, error) {
	q.l.once.Do(q.l.before)
	return q.Holder.DropDeadSeqs(ctx, seqs)
}

// TestDropAllTellsOnlyWhatItDropped: dlq drop --all racing dlq retry --all
// on one sink (Badger), in the order that went wrong: the drop's walk
// reads a page of dead letters, the retry puts some of them back in the
// queue, then the drop drops the page. OnDropDead, which lets a key held
// behind a dead letter go on (order_on_dead = "block"), was told every seq
// of the page, the retried ones too, so a later event of their key could
// overtake them; it is told exactly the seqs dropped.
func TestDropAllTellsOnlyWhatItDropped(t *testing.T) {
	for _, tc := range []struct {
		name    string
		retried int // how many of the 6 dead letters the retry takes
	}{
		{"all-retried", 6},
		{"some-retried", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := badgerlog.Open(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			const n = 6
			deadLetters(t, db, n, []byte(`{}`))
			dls, err := db.Queue("archive").DeadLetters(context.Background(), 0, n)
			if err != nil || len(dls) != n {
				t.Fatalf("DeadLetters = %d, %v; want %d", len(dls), err, n)
			}
			var seqs []uint64
			for _, d := range dls {
				seqs = append(seqs, d.Seq)
			}
			retried, wantDropped := seqs[:tc.retried], seqs[tc.retried:]

			var retryErr error
			retryCount := 0
			plain := v1Options(db)
			hooked := &beforeDropLog{Log: db, before: func() {
				// dlq retry of the first ones (all of them: --all),
				// between the drop's read and its drop.
				retryCount, retryErr = admin.SettleDead(context.Background(), plain, "archive", "retry", retried)
			}}
			o := v1Options(hooked)
			var mu sync.Mutex
			var told []uint64
			o.OnDropDead = func(sink string, seqs []uint64) {
				mu.Lock()
				defer mu.Unlock()
				told = append(told, seqs...)
			}
			r := call(t, admin.Handler(o), "POST", "/v1/sinks/archive/dlq/drop", token, `{"all":true}`)
			if r.code != http.StatusOK {
				t.Fatalf("POST dlq/drop all = %d %s", r.code, r.body)
			}
			if retryErr != nil || retryCount != tc.retried {
				t.Fatalf("the retry between the drop's read and its drop = %d, %v; want %d", retryCount, retryErr, tc.retried)
			}
			if res := into[admin.DeadLetterResult](t, r); res.Count != len(wantDropped) {
				t.Errorf("POST dlq/drop all counted %d, want %d dropped", res.Count, len(wantDropped))
			}
			mu.Lock()
			defer mu.Unlock()
			slices.Sort(told)
			if !slices.Equal(told, wantDropped) {
				t.Errorf("OnDropDead told %v, want exactly the dropped %v (not the retried %v)", told, wantDropped, retried)
			}
			st, err := db.Queue("archive").Stats(context.Background())
			if err != nil || st.Dead != 0 || st.Ready+st.Retrying != tc.retried {
				t.Errorf("Stats = %+v, %v; want the %d retried waiting, no dead letter", st, err, tc.retried)
			}
		})
	}
}
