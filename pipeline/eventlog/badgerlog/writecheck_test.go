package badgerlog_test

import (
	"errors"
	"testing"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog"
)

// TestCheckWrite checks that CheckWrite follows the free space without
// writing, and says closed after Close.
func TestCheckWrite(t *testing.T) {
	db := open(t, t.TempDir())
	free := int64(1 << 40)
	badgerlog.SetSpaceProbe(db, func() (int64, int64) { return free, 128 << 20 })
	tests := []struct {
		name string
		free int64
		want error
	}{
		{"room", 1 << 40, nil},
		{"nearly full", 100 << 20, pipeline.ErrFull},
		{"freed", 1 << 40, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			free = tt.free
			if err := db.CheckWrite(); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("CheckWrite() with %d MiB free = %v, want %v", tt.free>>20, err, tt.want)
			}
		})
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckWrite(); !errors.Is(err, pipeline.ErrClosed) {
		t.Errorf("CheckWrite() after Close = %v, want ErrClosed", err)
	}
}
