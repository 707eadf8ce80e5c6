package badgerlog

import (
	"os"
	"path/filepath"
)

// Sizes returns the bytes the log takes on disk by kind, for the
// pipelined_log_size_bytes metric. The kinds are this backend's, and
// dashboards rely on their names:
//
//   - lsm: Badger's LSM tree, everything in the directory but the value
//     log: tables (keys and the small records of events, queues, dedup
//     and rejections), memtable write-ahead logs (*.mem) and the manifest;
//   - vlog: Badger's value log (*.vlog), where only values at or over the
//     value threshold go (see commit.go), and what value-log GC reclaims;
//   - wal: the segments of the log's own write-ahead log (<dir>/wal),
//     which hold the events' full records, headers and bodies included.
//
// It lists directories, so it is cheap enough for every scrape.
func (l *DB) Sizes() map[string]int64 {
	lsm, vlog := l.Size()
	return map[string]int64{"lsm": lsm, "vlog": vlog, "wal": dirSize(filepath.Join(l.dir, "wal"))}
}

func dirSize(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && e.Type().IsRegular() {
			n += info.Size()
		}
	}
	return n
}

// Size returns the bytes Badger takes on disk: vlog is the value log
// (*.vlog files), lsm everything else in its directory (tables, memtable
// write-ahead logs, manifest). It lists the directory, so it is cheap
// enough for every metrics scrape. (Badger's own DB.Size reads counters
// that stay at 0 with its metrics turned off, as they are here.) After
// Close, or when the directory cannot be read, it returns what it could
// count.
func (l *DB) Size() (lsm, vlog int64) {
	dir := l.db.Opts().Dir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile (compaction, GC)
		}
		if filepath.Ext(e.Name()) == ".vlog" {
			vlog += info.Size()
		} else {
			lsm += info.Size()
		}
	}
	return lsm, vlog
}
