// Package badgerlog is the embedded, durable [pipeline.Log] of pipelined, on
// Badger v4.
//
// # Key layout
//
//	m/next                         next sequence number (BE uint64), written with every append
//	m/pending                      a seq below which no event is queued anywhere; see pending.go
//	e/<seq>                        event record (logpb.Event) without headers, body and payloads, and where
//	                               the full record lies in the write-ahead log; seq = 8-byte big-endian
//	i/<id>                         seq of the event with that id, for ids that are no UUIDv7 and
//	                               events appended before m/time-from
//	m/time-from                    first seq of the time index; see timeindex.go
//	m/time-legacy                  seq below which an older binary may have appended with i/ keys
//	t/<bucket><first seq>          last seq of a run of events whose UUIDv7 ids fall in one 128 ms bucket,
//	                               and a fingerprint of each id
//	d/<source>\x00<dedup key>      id of the first event with that key; Badger TTL = the dedup window
//	r/<sink>/<due><seq>            retry entry (logpb.Target), due = 8-byte BE unix nanoseconds
//	x/<sink>/<seq>                 dead-letter entry
//	s/<seq><sink>                  delivery record (logpb.Delivery), from the first settlement on; see delivery.go
//	a/<sink>/<last seq>            first-attempt acks of one settlement (logpb.Acks), standing for their
//	                               delivery records; see acks.go
//	q/<sink>/<seq>                 ready entry, in logs written before event records kept their routes only
//
// An event record keeps its dedup key, the sinks it was routed to and the
// route to each: an event with a route to a sink and no delivery record
// for it (nor an ack in the sink's Acks) is queued there. The queues'
// ready entries live in memory, rebuilt from the records in the background
// after Open (pending.go): Append writes no key per sink. A replay (Queue.Requeue) and a dead-letter retry
// (Queue.RetryDead) write retry entries due now: Fetch reads retries
// before the ready entries, and retention counts retry entries as
// references (P6).
//
// Sink names cannot contain '/', so one sink's prefix never covers another's.
//
// This layout, the records and the write-ahead log only grow: a later
// build reads the log an earlier one left, cleanly closed or crashed.
// TestCompatFixtures opens such logs (testdata/compat/<commit>/); a change
// of the format adds one of its own build there (see compat_test.go).
//
// # Durability
//
// An Append that returned nil is on disk (P1): every write transaction is
// first written to the log's own write-ahead log (group commit, one
// fdatasync for many transactions) and only then applied to Badger, which
// runs without SyncWrites; a checkpoint fsyncs Badger's files now and then
// and Open replays the write-ahead log from the last one. Event bodies live
// in the write-ahead log's segments, not in Badger. See commit.go for the
// design and why replay is correct, and docs/performance.md for why
// Badger's own "commit, then db.Sync()" is not durable.
//
// A queue's Fetch takes an event appended moments before from a bounded
// cache of the latest appends (recent.go) instead of reading it back from
// Badger and the write-ahead log; what it hands out is the same either way.
// Likewise Append skips Badger's lookup of a dedup key that a Bloom filter
// of the keys says is new (dedupfilter.go).
package badgerlog

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/wal"
)

// Options configures [Open]. The zero value (or nil) means the defaults.
type Options struct {
	// Logger receives Badger's own messages (Info as Debug) and the log's.
	Logger *slog.Logger
	// Retention is how long events are kept after they are received,
	// at least; an event still in some queue or dead-letter queue is kept
	// longer (P6). Zero means 7 days.
	Retention time.Duration
	// MaintenanceInterval is how often retention and value-log garbage
	// collection run. Zero means 1 minute.
	MaintenanceInterval time.Duration
	// MemTableSize is Badger's memtable size; it bounds one Append at
	// about 15% of it, and under ~14 MiB Badger's value threshold at half
	// of that (see valueThreshold). Zero means 16 MiB.
	MemTableSize int64
	// SegmentSize is the size of a write-ahead log segment: a checkpoint
	// runs each time one fills, so it bounds what Open replays. Zero means
	// 64 MiB.
	SegmentSize int64
	// Progress, if set, counts Open's work through a long start: one per
	// write-ahead log record replayed, so that the caller can tell a slow
	// Open from a stuck one; then one per event read to rebuild the sinks'
	// queues (a day's backlog is millions), which runs after Open returns.
	Progress *atomic.Int64
}

// DB is a [pipeline.Log] in one Badger directory.
type DB struct {
	space *space // refuses writes that could find the disk full
	db    *badger.DB
	dir   string
	log   *slog.Logger
	opts  Options

	// retryWrites counts the commits that wrote a retry entry (r/), of any
	// sink, moved after each such commit returns: see queue.noRetries.
	retryWrites atomic.Uint64

	// Badger's limits on a value, for Append's budget (budget.go).
	valueThreshold, valueLogFileSize int64

	// The write-ahead log and its committer; see commit.go.
	wal           *wal.Log
	commits       chan *commitReq
	marks         chan chan uint64
	kick          chan struct{} // a segment is full: checkpoint
	stopCommitter chan struct{}
	committerDone chan struct{}
	// After a halt (commit.go), every write fails with haltErr; halted is
	// closed then.
	halted  chan struct{}
	haltErr atomic.Pointer[error]
	// gcMu keeps a checkpoint and value-log GC apart: the GC rewrites
	// values outside the write-ahead log.
	gcMu sync.Mutex

	// Lock order: queue.mu, then refMu, then mu.
	mu     sync.Mutex
	next   uint64 // next sequence number; only Append changes it
	queues map[string]*queue
	closed chan struct{}
	wg     sync.WaitGroup

	// The queues' ready entries are rebuilt in the background after Open
	// (loadQueues), so that a day's backlog does not hold the start:
	// loaded is closed when that is done, loadErr (read after) is
	// ErrClosed if the log closed first, and openMark is the pending mark
	// Open read, which stays the mark until then. See waitQueues.
	// loadRead counts the records the rebuild read so far, of the
	// loadTotal seqs from openMark to the next at Open, and loadFailed
	// is why its last attempt failed (nil before any did).
	loaded     chan struct{}
	loadErr    error
	openMark   uint64
	loadRead   atomic.Int64
	loadTotal  int64
	loadFailed atomic.Pointer[string]

	// timeFrom is the first seq that may be in the time index rather than
	// have an i/ key (m/time-from), or 0 until the first Append sets it;
	// see timeindex.go.
	timeFrom atomic.Uint64
	// legacyUpto: events from timeFrom to below it may have an i/ key too,
	// appended by an older binary after a downgrade (m/time-legacy; 0 for
	// none). Set by Open; legacyUnsaved until an Append has written it.
	legacyUpto    uint64
	legacyUnsaved bool

	// dedup says which dedup keys are certainly not in the log; see
	// dedupfilter.go.
	dedup *dedupFilter

	// batch is the last Append's, its maps and slices kept for the next
	// (Append has one caller at a time).
	batch appendBatch

	// appendRec is the record buffer of the last Append, kept for the
	// next (Append has one caller at a time): once commit returns, the
	// committer has written it and Badger has copied what it applied
	// (its memtable and WALs copy keys and values; see writeToLSM), so
	// nothing refers to it any more.
	appendRec []byte

	// refMu is held by retention and by Requeue, the one write that adds
	// a reference to an event that may be old: without it, retention could
	// delete an event in the moment a replay queues it.
	refMu sync.Mutex

	// rejects bounds each source's rejections (keep_rejected_max); see
	// reject.go.
	rejects rejectLedger

	// recent holds the latest appended events for the dispatchers; see
	// recent.go.
	recent recent
}

var _ pipeline.Log = (*DB)(nil)

// valueThreshold is Badger's value threshold for a memtable of
// memTableSize: 1 MiB, or half of Badger's bound on one transaction (15%
// of the memtable) when that is less, under ~14 MiB. A value under the
// threshold stays in the LSM tree and counts whole toward the bound, one
// over it is a pointer to the value log; at the bound less one byte (as it
// was), a payload just under it and the rest of its entry's writes (the
// key it leaves, its delivery record with the error) went over the bound
// by themselves, and a page of that one entry (dlq add, retry, a
// dispatcher's settle) failed on every call. Half leaves the other half
// for the rest of the entry: its errors are a few KiB.
func valueThreshold(memTableSize int64) int64 {
	return min(1<<20, memTableSize*15/100/2)
}

// Open opens (creating it if needed) the log in dir. Only one process can
// have it open: a second one gets an error naming the directory.
func Open(dir string, o *Options) (*DB, error) {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Retention <= 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.MaintenanceInterval <= 0 {
		opts.MaintenanceInterval = time.Minute
	}
	if opts.MemTableSize <= 0 {
		opts.MemTableSize = 16 << 20
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 64 << 20
	}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(false).      // the write-ahead log makes writes durable: see commit.go
		WithDetectConflicts(false). // one writer per keyspace: see the package doc
		WithLogger(badgerLogger{opts.Logger}).
		WithMetricsEnabled(false).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(8 << 20).
		WithValueLogFileSize(64 << 20).
		// Values stay in the LSM tree: event bodies are in the write-ahead
		// log, so what Badger stores is small. Only a value at or over the
		// threshold (a transform payload or dead-letter error of 1 MiB or
		// more) goes to the value log, which maintain's GC reclaims; see
		// commit.go. Badger refuses a threshold over 1 MiB or over its
		// batch size, 15% of the memtable; valueThreshold keeps it at half
		// that, so that one entry always fits in a transaction.
		WithValueThreshold(valueThreshold(opts.MemTableSize)).
		// Small tables, no compression: compaction's table builders and
		// Snappy's buffers (ristretto's z.Calloc) grew the heap past 300 MiB
		// in a minute of load with Snappy and 2 MiB tables, doubling; with
		// these it stays at ~150 MiB RssAnon. What Badger stores is small
		// keys and protobuf metadata, so the disk cost is modest.
		WithBaseTableSize(1 << 20).
		WithNumCompactors(2).
		WithCompression(options.None)
	bo.TableSizeMultiplier = 1
	if err := removeEmptyMemtables(dir); err != nil { // see space.go
		return nil, fmt.Errorf("open event log %s: %w", dir, err)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open event log %s: %w", dir, err)
	}
	w, err := wal.Open(filepath.Join(dir, "wal"), opts.SegmentSize)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open event log %s: %w", dir, err)
	}
	l := &DB{
		db: db, dir: dir, log: opts.Logger, opts: opts, queues: map[string]*queue{},
		valueThreshold: bo.ValueThreshold, valueLogFileSize: bo.ValueLogFileSize,
		closed: make(chan struct{}), space: &space{dir: dir},
		wal: w, commits: make(chan *commitReq), marks: make(chan chan uint64), kick: make(chan struct{}, 1),
		stopCommitter: make(chan struct{}), committerDone: make(chan struct{}), halted: make(chan struct{}),
		dedup: newDedupFilter(),
	}
	// Badger's maps get their blocks before anything writes to Badger:
	// see space.go. (Badger's size for a memtable WAL file is twice the
	// memtable.)
	l.space.alloc.start(dir, 2*bo.MemTableSize, opts.Logger)
	if err := l.replay(); err != nil {
		w.Close()
		db.Close()
		l.space.alloc.close()
		return nil, fmt.Errorf("open event log %s: %w", dir, err)
	}
	if err := l.loadNext(); err != nil {
		w.Close()
		db.Close()
		l.space.alloc.close()
		return nil, err
	}
	l.loaded = make(chan struct{})
	l.loadTotal = int64(l.next - min(l.openMark, l.next))
	l.wg.Add(1)
	go l.loadQueues(l.openMark, l.next)
	go l.committer()
	l.wg.Add(1)
	go l.checkpoints()
	l.wg.Add(1)
	go l.dedupFilterLoop()
	l.every(opts.MaintenanceInterval, l.maintain)
	written := l.openMark
	l.every(markInterval, func() {
		var err error
		if written, err = l.writeMark(written); err != nil && l.checkOpen() == nil && l.HaltErr() == nil {
			l.log.Warn("event log: could not write the pending mark; the next start reads more of the log", "err", err)
		}
	})
	return l, nil
}

// Key prefixes; see the package doc.
var (
	keyNext   = []byte("m/next")
	preEvent  = []byte("e/")
	preIndex  = []byte("i/")
	preDedup  = []byte("d/")
	preReady  = []byte("q/")
	preRetry  = []byte("r/")
	preDead   = []byte("x/")
	sepSource = byte(0)
)

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func eventKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), preEvent...), seq)
}

func indexKey(id string) []byte { return append(append([]byte(nil), preIndex...), id...) }

// maxDedupKey is the longest dedup key stored as it is; a longer one (a
// body can make it up to max_body long) is stored as its SHA-256, because
// Badger refuses keys over 65000 bytes and would fail the whole commit,
// and with it every request of the batch.
const maxDedupKey = 32 << 10

// dedupKey is the Badger key of a dedup key of source. A hashed key is stored as "\x00h" and the hex of its SHA-256; a literal
// key that starts with "\x00" is stored after "\x00s", any other literal
// key as it is. So a literal key can never meet a hashed one (a literal
// "sha256:<hex>" once met the long key it hashes), and keys stored before
// this change keep their form (a long key then was "sha256:<hex>": after
// an upgrade it is not recognised for one dedup window).
func dedupKey(source, key string) []byte {
	b := append(append([]byte(nil), preDedup...), source...)
	b = append(b, sepSource)
	switch {
	case len(key) > maxDedupKey:
		sum := sha256.Sum256([]byte(key))
		return append(append(b, 0, 'h'), hex.EncodeToString(sum[:])...)
	case strings.HasPrefix(key, "\x00"):
		return append(append(b, 0, 's'), key...)
	}
	return append(b, key...)
}

// dedupID returns the id of the event that set dedup key dk, as txn sees
// it, and whether there is one.
func dedupID(txn *badger.Txn, dk []byte) (string, bool, error) {
	item, err := txn.Get(dk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", false, nil
	}
	var id []byte
	if err == nil {
		id, err = item.ValueCopy(nil)
	}
	if err != nil {
		return "", false, fmt.Errorf("read dedup key: %w", err)
	}
	return string(id), true, nil
}

func sinkPrefix(pre []byte, sink string) []byte {
	return append(append(append([]byte(nil), pre...), sink...), '/')
}

func readyKey(sink string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(sinkPrefix(preReady, sink), seq)
}

func deadKey(sink string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(sinkPrefix(preDead, sink), seq)
}

func retryKey(sink string, due time.Time, seq uint64) []byte {
	b := binary.BigEndian.AppendUint64(sinkPrefix(preRetry, sink), uint64(due.UnixNano()))
	return binary.BigEndian.AppendUint64(b, seq)
}

// loadNext reads the next sequence number (1 in a new log), the pending
// mark (openMark) and where the time index starts (timeFrom).
func (l *DB) loadNext() error {
	return l.db.View(func(txn *badger.Txn) (err error) {
		if l.next, err = readSeq(txn, keyNext, 1); err != nil {
			return err
		}
		if l.openMark, err = readSeq(txn, keyPendingMark, 0); err != nil {
			return err
		}
		from, err := readSeq(txn, keyTimeFrom, 0)
		if err != nil {
			return err
		}
		l.timeFrom.Store(from)
		if l.legacyUpto, err = readSeq(txn, keyTimeLegacy, 0); err != nil {
			return err
		}
		if from != 0 && l.next > from && l.next > l.legacyUpto && appendedByOlder(txn, l.next-1) {
			l.legacyUpto, l.legacyUnsaved = l.next, true
		}
		return nil
	})
}

// readSeq reads the sequence number (8 bytes, big-endian) at key, or
// returns missing when there is none.
func readSeq(txn *badger.Txn, key []byte, missing uint64) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return missing, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	seq := missing
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("event log: corrupt %s (%d bytes)", key, len(v))
		}
		seq = binary.BigEndian.Uint64(v)
		return nil
	})
	return seq, err
}

// Append implements [pipeline.Log].
func (l *DB) Append(ctx context.Context, entries []pipeline.Entry) ([]pipeline.Appended, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := l.space.check(); err != nil {
		return nil, err
	}
	b := &l.batch
	if err := l.startAppend(b, entries); err != nil {
		return nil, err
	}
	defer b.done()
	out := make([]pipeline.Appended, len(entries))
	for i := range entries {
		var err error
		if out[i], err = b.add(i, &entries[i]); err != nil {
			return nil, err
		}
	}
	if err := b.seal(); err != nil {
		return nil, err
	}
	b.earlier.Discard() // done reading: not held open through the commit
	err := l.commit(b.txn)
	if poisonRecord {
		for i := range b.txn.rec {
			b.txn.rec[i] = 0xAA
		}
	}
	if cap(b.txn.rec) <= maxKeptRecord {
		l.appendRec = b.txn.rec[:0] // the committer is done with it, whatever err says
	}
	// Even when commit failed: its record may be applied all the same (a
	// key too many in the filter costs a lookup; one missing, a duplicate).
	l.dedup.add(b.newKeys)
	if err != nil {
		return nil, err
	}
	l.publish(b, entries)
	return out, nil
}

// appendBatch is one Append's work between its checks and its commit: the
// transaction it fills, and what the queues, the recent-events cache and
// the dedup filter learn once it is committed.
type appendBatch struct {
	l       *DB
	txn     *wtxn
	earlier lazyView // the dedup keys of earlier Appends
	now     int64    // a failed target's time
	// first is the sequence number of the batch's first event, next that
	// of the one after its last.
	first, next uint64
	timeFrom    uint64
	runs        timeRuns
	newKeys     map[string]string   // dedup keys set by this batch, to their ids: for its own lookups and the filter
	queued      map[string][]uint64 // seqs appended, by sink
	appended    []int               // the entries written, at first, first+1, ...
	routed      []routing           // and their routes
}

// startAppend readies b, the last Append's, for entries: the transaction
// with its record sized for them, and the keys the first Append of a
// version writes. b's maps and slices are kept from one Append to the next.
func (l *DB) startAppend(b *appendBatch, entries []pipeline.Entry) error {
	b.l = l
	b.txn = l.newBlindTxn() // reads go through earlier
	b.earlier = lazyView{db: l.db}
	b.now = time.Now().UnixNano()
	b.first, b.next = l.next, l.next
	b.timeFrom = l.timeFrom.Load()
	b.runs = timeRuns{}
	if b.newKeys == nil {
		b.newKeys, b.queued = map[string]string{}, map[string][]uint64{}
	}
	clear(b.newKeys)
	clear(b.queued)
	b.appended, b.routed = b.appended[:0], b.routed[:0]
	// The record holds every event in full: size it once rather than let
	// append double it all the way there, in the last Append's buffer.
	size := 0
	for i := range entries {
		size += len(entries[i].Event.Body) + 64*len(entries[i].Event.Headers) + 512
	}
	b.txn.rec = slices.Grow(append(l.appendRec[:0], b.txn.rec...), size)
	if b.timeFrom == 0 { // the first Append of a version with the time index
		b.timeFrom = b.next
		if err := b.txn.Set(keyTimeFrom, seqBytes(b.timeFrom)); err != nil {
			return l.writeErr(err)
		}
	}
	if l.legacyUnsaved {
		if err := b.txn.Set(keyTimeLegacy, seqBytes(l.legacyUpto)); err != nil {
			return l.writeErr(err)
		}
	}
	return nil
}

// done ends the batch's reads, and lets go of its transaction and of the
// events it kept for publish.
func (b *appendBatch) done() {
	b.earlier.Discard()
	b.txn = nil
	clear(b.routed)
}

// add writes entries[i], e, into the batch, or finds it a duplicate: of an
// event of this batch, or of an earlier Append's.
func (b *appendBatch) add(i int, e *pipeline.Entry) (pipeline.Appended, error) {
	if e.DedupKey != "" {
		id, dup, err := b.dedup(e)
		if err != nil || dup {
			return pipeline.Appended{ID: id, Duplicate: dup}, err
		}
	}
	seq := b.next
	b.next++
	rec := eventRecord(&e.Event, e.Targets)
	if e.DedupKey != "" {
		rec.DedupKey = e.DedupKey
	}
	// The full record is the meta followed by headers and body: protobuf
	// reads concatenated messages as one, so each field is encoded once.
	rest := &logpb.Event{Headers: rec.Headers, Body: rec.Body, Payloads: rec.Payloads}
	r := routing{routes: rec.Routes, payloads: clonePayloads(rec.Payloads)} // the caller's payloads may change
	rec.Headers, rec.Body, rec.Payloads = nil, nil, nil
	meta, err := eventUTF8.encoded(rec.MarshalVT())
	if err != nil {
		return pipeline.Appended{}, fmt.Errorf("encode event: %w", err)
	}
	if err := b.txn.setEvent(eventKey(seq), meta, rest); err != nil {
		return pipeline.Appended{}, b.l.writeErr(err)
	}
	if bucket, ok := idBucket(e.Event.ID); ok {
		b.runs.add(bucket, seq, e.Event.ID) // found through the time index (timeindex.go)
	} else if err := b.txn.Set(indexKey(e.Event.ID), seqBytes(seq)); err != nil {
		return pipeline.Appended{}, b.l.writeErr(err)
	}
	if err := b.target(seq, e.Targets); err != nil {
		return pipeline.Appended{}, err
	}
	b.appended = append(b.appended, i)
	b.routed = append(b.routed, r)
	return pipeline.Appended{ID: e.Event.ID}, nil
}

// dedup returns the id of the event whose dedup key e repeats, if one
// does; else it sets e's key in the batch.
func (b *appendBatch) dedup(e *pipeline.Entry) (string, bool, error) {
	dk := dedupKey(e.Event.Source, e.DedupKey)
	id, dup := b.newKeys[string(dk)]
	if !dup && b.l.dedup.mayHave(dk) { // an earlier Append's
		var err error
		if id, dup, err = dedupID(b.earlier.Txn(), dk); err != nil {
			return "", false, err
		}
	}
	if dup {
		return id, true, nil
	}
	ent := badger.NewEntry(dk, []byte(e.Event.ID))
	if e.DedupWindow > 0 {
		ent = ent.WithTTL(e.DedupWindow)
	}
	if err := b.txn.SetEntry(ent); err != nil {
		return "", false, b.l.writeErr(err)
	}
	b.newKeys[string(dk)] = e.Event.ID
	return "", false, nil
}

// target queues the event at seq for its targets' sinks, or writes it
// straight into a sink's dead-letter queue when its route failed there.
func (b *appendBatch) target(seq uint64, targets []pipeline.Target) error {
	for _, t := range targets {
		if t.Err == "" { // queued: the record's route says so (pending.go)
			b.queued[t.Sink] = append(b.queued[t.Sink], seq)
			continue
		}
		tv, err := targetUTF8.encoded((&logpb.Target{Route: t.Route, Payload: t.Payload, LastError: t.Err, FailedAtUnixNano: b.now}).MarshalVT())
		if err != nil {
			return fmt.Errorf("encode queue entry: %w", err)
		}
		if err := b.txn.Set(deadKey(t.Sink, seq), tv); err != nil {
			return b.l.writeErr(err)
		}
	}
	return nil
}

// seal writes what the batch as a whole changes: the time index's runs and
// the next sequence number.
func (b *appendBatch) seal() error {
	if err := b.runs.write(b.txn); err != nil {
		return b.l.writeErr(err)
	}
	if b.next != b.first {
		if err := b.txn.Set(keyNext, seqBytes(b.next)); err != nil {
			return b.l.writeErr(err)
		}
	}
	return nil
}

// publish makes a committed batch visible: the recent-events cache and the
// queues take its events before next moves past them (see pendingMark).
func (l *DB) publish(b *appendBatch, entries []pipeline.Entry) {
	l.timeFrom.Store(b.timeFrom)
	l.legacyUnsaved = false
	if appendHook != nil {
		appendHook()
	}
	for j, i := range b.appended {
		if len(b.routed[j].routes) > 0 { // only an event some queue will hand out is worth keeping at hand
			l.recent.add(b.first+uint64(j), entries[i].Event, entries[i].DedupKey, b.routed[j])
		}
	}
	for sink, seqs := range b.queued {
		q := l.queue(sink)
		q.pmu.Lock()
		q.pending.add(seqs...)
		q.pmu.Unlock()
		q.wake()
	}
	l.mu.Lock()
	l.next = b.next
	l.mu.Unlock()
}

// appendHook, when set (by tests only), is called when an Append has
// committed, before its entries are queued in memory.
var appendHook func()

// poisonRecord, when set (by tests only), makes Append overwrite its
// record buffer as soon as commit returns, as the next Append will: a
// test then proves that nothing (Badger included) still reads it.
var poisonRecord bool

// maxKeptRecord bounds the record buffer Append keeps for the next: one
// bigger (a batch of large bodies) is left to the garbage collector.
const maxKeptRecord = 4 << 20

func (l *DB) writeErr(err error) error {
	switch {
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("%w: %w", pipeline.ErrTooBig, err)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w: %w", pipeline.ErrFull, err)
	case errors.Is(err, badger.ErrBlockedWrites), errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("%w: %w", pipeline.ErrClosed, err)
	}
	return fmt.Errorf("write event log: %w", err)
}

func (l *DB) checkOpen() error {
	select {
	case <-l.closed:
		return pipeline.ErrClosed
	default:
		return nil
	}
}

func eventRecord(ev *pipeline.Event, targets []pipeline.Target) *logpb.Event {
	rec := &logpb.Event{
		Id:                 ev.ID,
		Source:             ev.Source,
		ReceivedAtUnixNano: ev.ReceivedAt.UnixNano(),
		Headers:            ev.Headers,
		Body:               ev.Body,
		Auth:               ev.Auth,
		DedupKey:           ev.DedupKey,
		Traceparent:        ev.TraceParent,
		Tracestate:         ev.TraceState,
	}
	if len(targets) > 0 {
		rec.Sinks = make([]string, len(targets))
		for i, t := range targets {
			rec.Sinks[i] = t.Sink
			if t.Err != "" {
				continue // a dead letter from the start
			}
			rec.Routes = append(rec.Routes, &logpb.Route{Sink: t.Sink, Route: t.Route})
			if len(t.Payload) > 0 {
				rec.Payloads = append(rec.Payloads, &logpb.Payload{Sink: t.Sink, Payload: t.Payload})
			}
		}
	}
	return rec
}

func eventFromRecord(rec *logpb.Event) pipeline.Event {
	return pipeline.Event{
		ID:         rec.GetId(),
		Source:     rec.GetSource(),
		ReceivedAt: time.Unix(0, rec.GetReceivedAtUnixNano()).UTC(),
		Headers:    rec.GetHeaders(),
		Body:       rec.GetBody(),
		Auth:       rec.GetAuth(),
		DedupKey:   rec.GetDedupKey(),

		TraceParent: rec.GetTraceparent(),
		TraceState:  rec.GetTracestate(),
	}
}

// readEvent reads the event at seq inside txn, with headers and body.
func (l *DB) readEvent(txn *badger.Txn, seq uint64) (*logpb.Event, error) {
	item, err := txn.Get(eventKey(seq))
	if err != nil {
		return nil, err
	}
	rec := &logpb.Event{}
	err = item.Value(func(v []byte) error { return decode(v, rec) })
	if err != nil {
		return nil, fmt.Errorf("decode event %d: %w", seq, err)
	}
	return l.full(rec, seq)
}

// full returns the event's full record: rec itself, or the record in the
// write-ahead log that rec points to.
func (l *DB) full(rec *logpb.Event, seq uint64) (*logpb.Event, error) {
	if rec.GetLength() == 0 {
		return rec, nil // written before the write-ahead log: all in Badger
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	b, err := l.wal.AppendAt((*bp)[:0], wal.Pos{Seg: rec.GetSegment(), Off: rec.GetOffset()}, int(rec.GetLength()))
	if cap(b) <= 1<<20 {
		*bp = b
	}
	if err != nil {
		return nil, fmt.Errorf("event %d: %w", seq, err)
	}
	out := &logpb.Event{}
	if err := decode(b, out); err != nil { // copies what it keeps: b is reused
		return nil, fmt.Errorf("decode event %d: %w", seq, err)
	}
	return out, nil
}

// readBufs hold the bytes of full records between reading and decoding.
var readBufs = sync.Pool{New: func() any { return new([]byte) }}

// Event implements [pipeline.Log].
func (l *DB) Event(ctx context.Context, id string) (pipeline.Event, error) {
	if err := l.checkOpen(); err != nil {
		return pipeline.Event{}, err
	}
	var ev pipeline.Event
	err := l.db.View(func(txn *badger.Txn) error {
		seq, err := lookup(ctx, txn, id)
		if err != nil {
			return err
		}
		rec, err := l.readEvent(txn, seq)
		if err != nil {
			return err
		}
		ev = eventFromRecord(rec)
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ev, fmt.Errorf("event %s: %w", id, pipeline.ErrNotFound)
	}
	return ev, err
}

// Queue implements [pipeline.Log]. It returns the same queue for the same
// name, so its in-memory entries and leases are shared by every caller in
// the process.
func (l *DB) Queue(sink string) pipeline.Queue { return l.queue(sink) }

// queue returns the queue of sink, made on first use.
func (l *DB) queue(sink string) *queue {
	l.mu.Lock()
	defer l.mu.Unlock()
	q, ok := l.queues[sink]
	if !ok {
		q = newQueue(l, sink)
		l.queues[sink] = q
	}
	return q
}

// Close implements [pipeline.Log]: it stops maintenance and closes Badger,
// which flushes its memtables.
func (l *DB) Close() error {
	l.mu.Lock()
	select {
	case <-l.closed:
		l.mu.Unlock()
		return nil
	default:
	}
	close(l.closed)
	l.mu.Unlock()
	l.wg.Wait()
	// The last pending mark, so that the next Open reads no more of the
	// log than it must.
	if _, err := l.writeMark(0); err != nil && !errors.Is(err, pipeline.ErrHalted) {
		l.log.Warn("event log: no pending mark at close; the next start reads more of the log", "err", err)
	}
	close(l.stopCommitter)
	<-l.committerDone // every record is applied, unless the log halted
	halted := l.HaltErr() != nil
	// A last checkpoint, so that the next Open replays nothing; none after
	// a halt, whose records the next Open must apply.
	err := wal.SyncFiles(l.dir)
	if halted {
		l.log.Warn("event log: closed after it stopped writing; the next start applies the write-ahead log from the first record not applied")
	} else if err == nil {
		var seg uint64
		if seg, err = l.wal.Rotate(); err == nil {
			err = l.wal.SetCheckpoint(seg)
		}
	}
	if err != nil {
		l.log.Warn("event log: no checkpoint at close; the next start replays the write-ahead log", "err", err)
	}
	werr := l.wal.Close()
	err = l.db.Close()
	l.space.alloc.close()
	if err != nil {
		return fmt.Errorf("close event log: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("close event log: %w", werr)
	}
	return nil
}
