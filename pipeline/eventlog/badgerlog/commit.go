package badgerlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/logpb"
	"github.com/pipelined/pipelined/pipeline/eventlog/badgerlog/internal/wal"
)

// Writes reach Badger through a write-ahead log of our own (package wal,
// in <dir>/wal), and Badger runs without SyncWrites:
//
//  1. A write transaction (wtxn) records each of its writes as an
//     operation in one record, while a Badger transaction that is never
//     committed gives it read-your-writes and Badger's size limit
//     (Append's, which reads nothing it wrote, has no Badger transaction:
//     a budget counts the limit, see budget.go).
//  2. The committer goroutine takes every record waiting, writes them to
//     the log with one write and one fdatasync (group commit across
//     Append, Settle and every other writer), and only then applies the
//     group to Badger, in log order, in one transaction (several when
//     Badger's size limit needs it).
//  3. A checkpoint fsyncs every file of Badger's directory (value log,
//     memtable WALs, tables, manifest) once every record below a segment
//     is applied, and then records that segment: Open replays the records
//     from the checkpoint on, so whatever Badger lost of them in a crash
//     is written again, in the same order, with the same values.
//
// Event bodies do not go through Badger at all: an Append record carries
// each event's full record, and the e/<seq> key holds the event without
// headers and body plus where its full record lies in the log (logpb.Event
// segment, offset, length); retention removes whole segments once no event
// in them is kept. What Badger stores is keys and small protobuf records,
// and it keeps a value in its LSM tree when the value is below its value
// threshold (1 MiB, less with a MemTableSize under ~14 MiB: see
// valueThreshold). A value at or above it goes to Badger's value log: in
// practice only a retry or dead-letter entry whose transform payload is
// that large (r/ and x/ keys carry the payload; a queued entry's is in the
// event's full record, in the write-ahead log) or a dead letter with an
// error message that long. Such a value goes through the write-ahead log like any other write, and maintain runs
// Badger's value-log GC (collectValueLog) every MaintenanceInterval to
// reclaim it once it is deleted; the GC finds nothing to do, cheaply, when
// no value went there. This replaces Badger's two
// msyncs of sparse memory-mapped files per commit by one fdatasync of an
// appended file (docs/performance.md: 1.5–3 ms against ~0.15–0.3 ms).
//
// Replay is correct because a record holds the writes' results, not their
// inputs (sequence numbers, ids, TTL deadlines are all in it): applying the
// records from the checkpoint on, in order, on top of any state Badger
// recovers (its synced tables plus some prefix of what came after) ends in
// the state they were first applied to.

// Operation codes of a record. A record is a version byte (recordV1) and
// then operations:
//
//	opSet    key, value, expiresAt (uvarint)
//	opDelete key
//	opEvent  key, meta, full     Badger gets meta + where full lies in the log;
//	                             full = meta + the encoded headers and body
//
// with every byte string as a uvarint length and the bytes.
const (
	recordV1 byte = 1

	opSet    byte = 1
	opDelete byte = 2
	opEvent  byte = 3
)

// maxRef and minRef are the most and the fewest bytes refFields adds to an
// event's meta: three one-byte tags and three varints.
const (
	maxRef = 3 * (1 + binary.MaxVarintLen64)
	minRef = 3 * (1 + 1)
)

// wtxn is a write transaction of the log; see the comment above. Its
// writes go through a Badger transaction, which reads them back and checks
// Badger's limits, or (Append's, which reads nothing it wrote) only through
// a budget that checks the same limits.
type wtxn struct {
	*badger.Txn // nil with a budget
	budget      *budget
	rec         []byte
	retry       bool  // it writes a retry entry: see DB.retryWrites
	threshold   int64 // Badger's value threshold: see setEvent
}

func (l *DB) newTxn() *wtxn {
	return &wtxn{Txn: l.db.NewTransaction(true), rec: []byte{recordV1}, threshold: l.valueThreshold}
}

// newBlindTxn returns a wtxn that cannot read, for writers that read
// nothing through it: no Badger transaction, so no read timestamp, which
// makes Badger wait for its watermark of the last commit to catch up (a
// hand-off to Badger's watermark goroutine that stalled Append behind
// every runnable request under load). A writer that reads uses a lazyView
// beside it.
func (l *DB) newBlindTxn() *wtxn {
	return &wtxn{budget: l.newBudget(), rec: []byte{recordV1}, threshold: l.valueThreshold}
}

// lazyView is a read-only Badger transaction made at its first use, for
// calls that most often read nothing (an Append whose dedup keys the
// filter rules out, a Fetch served from the recent cache): a transaction
// is hand-offs to Badger's watermark goroutine, as newBlindTxn says.
type lazyView struct {
	db  *badger.DB
	txn *badger.Txn
}

// Txn returns the transaction, making it at the first call.
func (v *lazyView) Txn() *badger.Txn {
	if v.txn == nil {
		v.txn = v.db.NewTransaction(false)
	}
	return v.txn
}

// Discard discards the transaction, if one was made; Txn makes a new one.
func (v *lazyView) Discard() {
	if v.txn != nil {
		v.txn.Discard()
		v.txn = nil
	}
}

// Discard discards the Badger transaction, if t has one.
func (t *wtxn) Discard() {
	if t.Txn != nil {
		t.Txn.Discard()
	}
}

// Set sets key to value.
func (t *wtxn) Set(key, value []byte) error { return t.SetEntry(badger.NewEntry(key, value)) }

// SetEntry sets e.Key to e.Value, with e's expiry.
func (t *wtxn) SetEntry(e *badger.Entry) error {
	if err := t.check(e); err != nil {
		return err
	}
	if bytes.HasPrefix(e.Key, preRetry) {
		t.retry = true
	}
	t.rec = append(t.rec, opSet)
	t.rec = appendBytes(t.rec, e.Key)
	t.rec = appendBytes(t.rec, e.Value)
	t.rec = binary.AppendUvarint(t.rec, e.ExpiresAt)
	return nil
}

// check adds e to t's Badger transaction, or else counts it against t's
// budget.
func (t *wtxn) check(e *badger.Entry) error {
	if t.Txn != nil {
		return t.Txn.SetEntry(e)
	}
	return t.budget.add(e.Key, e.Value)
}

// Delete deletes key.
func (t *wtxn) Delete(key []byte) error {
	var err error
	if t.Txn != nil {
		err = t.Txn.Delete(key)
	} else {
		err = t.budget.add(key, nil)
	}
	if err != nil {
		return err
	}
	t.rec = append(t.rec, opDelete)
	t.rec = appendBytes(t.rec, key)
	return nil
}

// setEvent sets key to meta plus the position in the log of the event's
// full record, meta followed by rest, which it encodes straight into the
// record.
func (t *wtxn) setEvent(key, meta []byte, rest *logpb.Event) error {
	// The check counts the value that costs Badger's size limit most of
	// those the committer may write (meta and a reference of minRef to
	// maxRef bytes): the longest, unless the longest reaches the value
	// threshold (a pointer to the value log) while a shorter one stays in
	// the tree at full size; then the longest under the threshold.
	vlen := len(meta) + maxRef
	if int64(len(meta)+minRef) < t.threshold && int64(vlen) >= t.threshold {
		vlen = int(t.threshold) - 1
	}
	if err := t.check(badger.NewEntry(key, append(meta[:len(meta):len(meta)], make([]byte, vlen-len(meta))...))); err != nil {
		return err
	}
	t.rec = append(t.rec, opEvent)
	t.rec = appendBytes(t.rec, key)
	t.rec = appendBytes(t.rec, meta)
	n := rest.SizeVT()
	t.rec = binary.AppendUvarint(t.rec, uint64(len(meta)+n))
	t.rec = append(t.rec, meta...)
	t.rec = slices.Grow(t.rec, n)
	b := t.rec[len(t.rec) : len(t.rec)+n]
	if _, err := rest.MarshalToSizedBufferVT(b); err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if err := eventUTF8.check(b); err != nil { // as proto.Marshal (encoding.go)
		return fmt.Errorf("encode event: %w", err)
	}
	t.rec = t.rec[:len(t.rec)+n]
	return nil
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

// refFields appends to an event's meta where its full record lies.
func refFields(meta []byte, p wal.Pos, n int) []byte {
	v := make([]byte, 0, len(meta)+maxRef)
	v = append(v, meta...)
	v = protowire.AppendTag(v, 9, protowire.VarintType)
	v = protowire.AppendVarint(v, p.Seg)
	v = protowire.AppendTag(v, 10, protowire.VarintType)
	v = protowire.AppendVarint(v, uint64(p.Off))
	v = protowire.AppendTag(v, 11, protowire.VarintType)
	return protowire.AppendVarint(v, uint64(n))
}

var errCorrupt = errors.New("corrupt write-ahead log record")

// writes is where applyRecord puts a record's operations: a Badger
// transaction, or replay's splitTxn.
type writes interface {
	SetEntry(e *badger.Entry) error
	Delete(key []byte) error
}

// applyRecord adds the operations of rec, whose payload starts at p in the
// log, to txn. txn keeps references to rec until it is committed.
func applyRecord(txn writes, p wal.Pos, rec []byte) error {
	if len(rec) == 0 || rec[0] != recordV1 {
		return fmt.Errorf("%w at segment %d offset %d: unknown version", errCorrupt, p.Seg, p.Off)
	}
	d := decoder{b: rec, off: 1}
	for d.off < len(rec) && d.err == nil {
		var err error
		switch op := d.byte(); op {
		case opSet:
			e := badger.NewEntry(d.bytes(), d.bytes())
			e.ExpiresAt = d.uvarint()
			if d.err == nil {
				err = txn.SetEntry(e)
			}
		case opDelete:
			key := d.bytes()
			if d.err == nil {
				err = txn.Delete(key)
			}
		case opEvent:
			key, meta := d.bytes(), d.bytes()
			full := d.bytes()
			at := wal.Pos{Seg: p.Seg, Off: p.Off + int64(d.off-len(full))}
			if d.err == nil {
				err = txn.SetEntry(badger.NewEntry(key, refFields(meta, at, len(full))))
			}
		default:
			d.err = fmt.Errorf("operation %d", op)
		}
		if err != nil {
			return err
		}
	}
	if d.err != nil {
		return fmt.Errorf("%w at segment %d offset %d: %w", errCorrupt, p.Seg, p.Off, d.err)
	}
	return nil
}

// decoder reads a record's fields; the first error sticks.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || d.off >= len(d.b) {
		d.fail()
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)-d.off) {
		d.fail()
		return nil
	}
	d.off += int(n)
	return d.b[d.off-int(n) : d.off : d.off]
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errors.New("truncated")
	}
}

// commitReq is one transaction's record on its way to the committer.
type commitReq struct {
	rec  []byte
	done chan error
}

// maxGroup bounds the bytes of one group commit.
const maxGroup = 8 << 20

// commit writes t's record to the log and applies it, and discards t.
func (l *DB) commit(t *wtxn) error {
	t.Discard()
	if len(t.rec) == 1 {
		return nil // nothing written
	}
	if err := l.HaltErr(); err != nil {
		return err
	}
	r := &commitReq{rec: t.rec, done: make(chan error, 1)}
	select {
	case l.commits <- r:
	case <-l.committerDone:
		return pipeline.ErrClosed
	}
	err := <-r.done
	if t.retry { // after the commit, failed or not ("maybe written"): see queue.noRetries
		l.retryWrites.Add(1)
	}
	return err
}

// committer writes waiting records in groups and applies them, until
// stopCommitter is closed. Between groups, when every record written is
// applied, it answers marks with the current segment; after a halt too,
// since nothing is written after it, and its group is in that segment.
func (l *DB) committer() {
	defer close(l.committerDone)
	var group []*commitReq
	var recs [][]byte
	seg := uint64(0)
	for {
		group, recs = group[:0], recs[:0]
		select {
		case r := <-l.commits:
			group = append(group, r)
		case reply := <-l.marks:
			reply <- l.wal.Current()
			continue
		case <-l.stopCommitter:
			return
		}
		if err := l.HaltErr(); err != nil { // sent before the halt: not written
			group[0].done <- err
			continue
		}
		size := len(group[0].rec)
	drain:
		for size < maxGroup {
			select {
			case r := <-l.commits:
				group = append(group, r)
				size += len(r.rec)
			default:
				break drain
			}
		}
		for _, r := range group {
			recs = append(recs, r.rec)
		}
		pos, err := l.wal.Write(recs)
		if err != nil {
			if errors.Is(err, wal.ErrBroken) {
				err = l.halt(err, l.wal.Current())
			} else {
				err = l.writeErr(err)
			}
			for _, r := range group {
				r.done <- err
			}
			continue
		}
		l.apply(group, pos)
		if s := pos[len(pos)-1].Seg; s != seg {
			if seg != 0 {
				select { // a segment is full: checkpoint, so Open replays little
				case l.kick <- struct{}{}:
				default:
				}
			}
			seg = s
		}
	}
}

// apply applies the group's records to Badger in log order, in one
// transaction when Badger's size limit allows (one hand-off to Badger's
// writer for the whole group), and answers each request. It makes a
// transaction only when a record is to go in: each costs hand-offs to
// Badger's watermark goroutine, and one made after the last commit, only to
// be discarded, stood between the answer and the next group.
//
// A record Badger refuses halts the log (see [DB.halt]): it and every
// record after it are answered with the halt's error, unapplied, and the
// next Open applies them in their order.
func (l *DB) apply(group []*commitReq, pos []wal.Pos) {
	var in []int        // the records in txn, from the first not yet applied
	var txn *badger.Txn // nil until a record is to go in
	discard := func() {
		if txn != nil {
			txn.Discard()
			txn = nil
		}
	}
	defer discard()
	commit := func() error {
		var err error
		if commitFault != nil {
			err = commitFault()
		}
		if err == nil {
			err = txn.Commit()
		} else {
			txn.Discard()
		}
		txn = nil
		l.space.alloc.written() // before the answer: see space.go
		if err != nil {
			return err
		}
		for _, i := range in {
			group[i].done <- nil
		}
		in = in[:0]
		return nil
	}
	// stop halts the log at record i, none of whose records from i on is
	// applied, and answers them.
	stop := func(i int, err error) {
		err = l.halt(err, pos[i].Seg)
		for _, r := range group[i:] {
			r.done <- err
		}
	}
	for i, r := range group {
		if txn == nil {
			txn = l.db.NewTransaction(true)
		}
		err := applyRecord(txn, pos[i], r.rec)
		if err == nil && applyFault != nil {
			err = applyFault(r.rec)
		}
		if err != nil && len(in) > 0 {
			// txn holds part of r: the records before r go on their own.
			discard()
			txn = l.db.NewTransaction(true)
			for _, j := range in {
				if aerr := applyRecord(txn, pos[j], group[j].rec); aerr != nil {
					stop(in[0], aerr) // cannot be: they were applied together a moment ago
					return
				}
			}
			if cerr := commit(); cerr != nil {
				stop(in[0], cerr)
				return
			}
			if errors.Is(err, badger.ErrTxnTooBig) {
				txn = l.db.NewTransaction(true)
				err = applyRecord(txn, pos[i], r.rec) // alone, it fits: Append's budget or its own txn checked
			}
		}
		if err != nil {
			stop(i, err)
			return
		}
		in = append(in, i)
	}
	if len(in) > 0 {
		if err := commit(); err != nil {
			stop(in[0], err)
		}
	}
}

// applyFault, when set (by tests only), is called after each record is
// put in the committer's transaction; an error it returns is the apply's.
// commitFault is called before each commit of that transaction; an error
// it returns is the commit's, which then does not happen.
var (
	applyFault  func(rec []byte) error
	commitFault func() error
)

// halt stops the log's writes for good after a failure that left records
// in the write-ahead log unapplied, from segment seg on (or the log's
// segment unknown), and returns the error every write gets from then on. A
// record applied after an unapplied one would be built on a state without
// it, and the next Open, which applies them in their order, would put the
// unapplied one under it: a retry key under a delivery that a later record
// wrote delivered (the event delivered again, and a replay of it queued a
// third time). So nothing more is written to the write-ahead log (no
// checkpoint passes seg, the current one), and the next Open applies the
// records from there in their order: the writers were told "maybe
// written", as on a timeout.
// The daemon stops on a halt (see [pipeline.Halter]); its service manager
// starts it again. Called by the committer only.
func (l *DB) halt(cause error, seg uint64) error {
	if err := l.HaltErr(); err != nil {
		return err
	}
	err := fmt.Errorf("%w after a failed write (restart pipelined: its start applies the write-ahead log in order): %w", pipeline.ErrHalted, l.writeErr(cause))
	l.haltErr.Store(&err)
	close(l.halted)
	l.log.Error("event log stopped writing: a write to disk failed, and a write after it could be applied out of order; pipelined must restart, and its start applies the write-ahead log in order",
		"err", cause, "segment", seg)
	return err
}

// Halted returns a channel closed once the log stopped taking writes (see
// [pipeline.Halter]).
func (l *DB) Halted() <-chan struct{} { return l.halted }

// HaltErr returns why the log stopped taking writes, or nil while it
// takes them.
func (l *DB) HaltErr() error {
	if p := l.haltErr.Load(); p != nil {
		return *p
	}
	return nil
}

// mark returns a segment below which every record is applied.
func (l *DB) mark() (uint64, error) {
	reply := make(chan uint64, 1)
	select {
	case l.marks <- reply:
		return <-reply, nil
	case <-l.committerDone:
		return 0, pipeline.ErrClosed
	}
}

// checkpoint makes Badger's files durable and moves the log's checkpoint
// to a segment below which every record is applied.
func (l *DB) checkpoint() error {
	l.gcMu.Lock()
	defer l.gcMu.Unlock()
	seg, err := l.mark()
	if err != nil {
		return err
	}
	if err := wal.SyncFiles(l.dir); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return l.wal.SetCheckpoint(seg)
}

// checkpoints runs a checkpoint each time the committer fills a segment.
func (l *DB) checkpoints() {
	defer l.wg.Done()
	for {
		select {
		case <-l.closed:
			return
		case <-l.kick:
		}
		if err := l.checkpoint(); err != nil && !errors.Is(err, pipeline.ErrClosed) {
			l.log.Error("event log checkpoint failed; the next start replays more of the log", "err", err)
		}
	}
}

// splitTxn is replay's transaction: when an operation does not fit, it
// commits what it holds and goes on in a new one. A record was written to
// fit Badger's transaction limit of its day, which is 15% of the memtable:
// after log.memtable_size is lowered, one may not fit whole. Replay needs
// no record to be atomic: a replay cut short is run again from the same
// checkpoint, which moves only once the whole log is applied and synced.
type splitTxn struct {
	db *badger.DB
	*badger.Txn
	written func() // after each commit: allocator.written
}

// SetEntry sets e, in a new transaction if the current one is full.
func (t *splitTxn) SetEntry(e *badger.Entry) error {
	return t.split(func() error { return t.Txn.SetEntry(e) })
}

// Delete deletes key, in a new transaction if the current one is full.
func (t *splitTxn) Delete(key []byte) error {
	return t.split(func() error { return t.Txn.Delete(key) })
}

func (t *splitTxn) split(op func() error) error {
	err := op()
	if !errors.Is(err, badger.ErrTxnTooBig) {
		return err
	}
	err = t.Commit()
	t.written()
	if err != nil {
		return err
	}
	t.Txn = t.db.NewTransaction(true)
	return op()
}

// progressed counts one step of Open's work in Options.Progress.
func (l *DB) progressed() {
	if p := l.opts.Progress; p != nil {
		p.Add(1)
	}
}

// replay applies the records from the checkpoint on, makes them durable
// and starts a new segment.
func (l *DB) replay() error {
	from, err := l.wal.Checkpoint()
	if err != nil {
		return err
	}
	n := 0
	err = l.wal.Replay(from, func(p wal.Pos, payload []byte) error {
		t := &splitTxn{db: l.db, Txn: l.db.NewTransaction(true), written: l.space.alloc.written}
		defer func() { t.Discard() }()
		if err := applyRecord(t, p, bytes.Clone(payload)); err != nil {
			return err
		}
		n++
		l.progressed()
		err := t.Commit()
		l.space.alloc.written()
		return err
	})
	if err != nil {
		return fmt.Errorf("replay the write-ahead log: %w", err)
	}
	if n > 0 {
		l.log.Info("event log: replayed the write-ahead log", "records", n)
	}
	if err := wal.SyncFiles(l.dir); err != nil {
		return fmt.Errorf("replay the write-ahead log: %w", err)
	}
	seg, err := l.wal.Rotate()
	if err != nil {
		return err
	}
	return l.wal.SetCheckpoint(seg)
}
