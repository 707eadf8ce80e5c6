package badgerlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pipelined/pipelined/pipeline"
)

func TestSize(t *testing.T) {
	l := open(t, t.TempDir())
	defer l.Close()
	lsm0, vlog0 := l.Size()
	if lsm0 <= 0 || vlog0 <= 0 {
		t.Fatalf("Size() of a new log = %d, %d, want both > 0", lsm0, vlog0)
	}
	wal0 := l.Sizes()["wal"]
	body := make([]byte, 4096)
	for i := range body {
		body[i] = 'x'
	}
	var entries []pipeline.Entry
	for i := range 100 {
		entries = append(entries, pipeline.Entry{Event: pipeline.Event{
			ID: fmt.Sprint("ev", i), Source: "s", ReceivedAt: time.Now(), Body: []byte(`"` + string(body) + `"`),
		}})
	}
	if _, err := l.Append(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	if _, vlog := l.Size(); vlog < vlog0 {
		t.Errorf("Size() vlog after 400 KB appended = %d, want at least %d", vlog, vlog0)
	}
	if wal := l.Sizes()["wal"]; wal < wal0+400<<10 {
		t.Errorf(`Sizes()["wal"] after 400 KB appended = %d, want at least %d`, wal, wal0+400<<10)
	}
}
