// Package jetstreamlog implements [pipeline.Log] on one NATS JetStream
// stream, so that several pipelined daemons share one log: each takes
// webhooks, any of them delivers, and a 3-node NATS cluster survives the
// loss of a node. docs/jetstream.md is the operator's side of this text.
//
// # Layout
//
// Everything lives in one stream, named by [Options.Stream] (P below),
// with WorkQueue retention and at most one message per subject:
//
//	P.ev.<id>             the event; Nats-TTL = the log's retention
//	P.q.<sink>.<id>       a queue entry: a copy of the event, the route, the payload
//	P.dlq.<sink>.<id>     a dead letter written by Append: the same, with attempts, error, time
//	P.dlq.<sink>.seq.<seq> a dead letter written by Settle (its subject names the Seq)
//	P.st.<sink>.<seq>     retry state of a queue entry: failures so far, last error
//	P.dr.<sink>.<seq>     delivery record of the event at seq for the sink; Nats-TTL = retention
//	P.dd.<source>.<hash>  a dedup marker: the first event's id; Nats-TTL = the source's window
//
// One stream because an atomic batch (ADR-50, nats-server 2.12+) is
// confined to one stream, and [pipeline.Log.Append] must write events,
// routing and dedup keys all or nothing. An event's Seq is the stream
// sequence of its P.ev message; a queue message written in the same batch
// carries its distance to it (the batch is stored contiguously), a later
// one (replay, retried dead letter) carries the Seq itself.
//
// # Routing
//
// Append publishes one atomic batch per call: for each entry that is not a
// duplicate, its dedup marker, its event and one P.q message per target
// (a P.dlq message for a target whose transform failed). The batch's
// commit is acknowledged after the stream stored it on a quorum of its
// replicas; only then does Append return, and only then does the writer
// answer 2xx (P1). A queue message holds its own copy of the event, so a
// dispatcher reads one message per delivery and the event's own retention
// never removes undelivered work (P6). The alternative, the event once
// with its sink list and consumers that filter on it, cannot work: a
// consumer filters on subjects, not on a list in a message. It costs one
// copy of the event per target; measured with a 1.3 KB CallKaro payload
// and two sinks, Append of 64 events (256 messages) takes about 10-15 ms
// on a 2-core machine against a local R1 server.
//
// # Dedup
//
// JetStream's own duplicate window (Nats-Msg-Id) is one window per stream,
// and an atomic batch fails as a whole on a duplicate message id; pipelined
// needs one window per source, inside one stream. So each keyed entry
// writes a marker P.dd.<source>.<sha256(key)> with Nats-TTL = the source's
// dedup_window and the header Nats-Expected-Last-Subject-Sequence: 0. The
// server checks that header inside the batch: if any daemon of the cluster
// stored the key (and its TTL has not run out), the batch fails, Append
// looks the markers up, answers those entries as duplicates of the id the
// marker holds, and publishes the rest. The first try skips the lookups,
// so an append without duplicates costs one round trip. Windows therefore
// map to subjects of the one stream, one TTL per key; the stream's own
// duplicate window is unused (kept at a minute).
//
// # Queues
//
// Each sink's queue is a durable pull consumer named sink_<sink> that
// filters P.q.<sink>.>; every daemon uses the same consumer, so the work is
// split, not duplicated. Fetch sends pull requests with no_wait and an
// expiry (the server answers as soon as it has any message); JetStream
// hands redeliveries (due retries) out before new messages, and each answer
// is sorted by Seq. A fetched message is leased: the process renews it
// (+WPI) every AckWait/3 while it holds it, Close naks what it still
// holds, and a daemon killed -9 loses its leases after AckWait (30s by
// default), when another daemon gets them.
//
// Settle maps outcomes to acknowledgements, each confirmed by the server:
// Ack is +ACK (in WorkQueue retention the message leaves the stream);
// Retry stores P.st (the failure count and error) then naks with the delay
// (-NAK {"delay":...}); Dead publishes P.dlq.<sink>.seq.<seq> then
// terminates (+TERM). The
// consumer's MaxDeliver is unlimited: the dispatcher counts attempts
// (Attempt is 1 + the failures in P.st) and settles Dead at max_attempts,
// because a server-side MaxDeliver only stops redelivering and would leave
// the entry in no queue and no DLQ. A Settle call is not atomic as a whole:
// each settlement is, in an order that never loses an entry (state before
// nak, dead letter before term); a crash in between may deliver an entry
// once more or leave a dead letter also queued.
//
// RetryDead and Requeue write a P.q message with its P.st record (attempts
// 0, the last error) in one atomic batch; such an entry joins the end of
// the queue rather than its Seq's place.
//
// Requeue (a replay's page) reads of each event only what it needs.
// Whether the event has a queue entry or a dead letter here is asked as
// the count of messages on that subject: a stream info with the subject
// as filter, answered from the server's index of subjects, reads no
// message, where a get sends the entry's copy of the event whole
// (nats-server 2.15 has no get of the headers alone: no_hdr leaves out
// the headers, not the payload). Those subjects name the event's id,
// which a replay passes with each seq (the event's P.ev subject is then
// counted the same way, to fail a seq no longer in the log); the event
// itself is read only when it is queued, since the entry holds a copy.
// Given seqs only, Requeue reads each event once for its id and holds at
// most 4 MiB of their bodies until it queues them; the rest are read
// again then. With a page of 10 events of 1 MiB, of which Requeue queues
// 2, the server sent about 18 events' worth before (the events, and the
// copies in queue entries and dead letters), 2 now; given seqs only, 20
// before and 10 now (TestRequeueReadsOnlyWhatItQueues). A page of 8 MiB
// given by seqs, with a hold of 1 MiB, peaked the heap 11 MiB above its
// start before, 3 MiB now (TestRequeueHoldsABoundedPage).
//
// # Dead letters
//
// The stream keeps dead letters in the order they died, and a get reads a
// whole message (a work-queue stream allows no header-only consumer), so
// DeadLetters finds a page in log order without reading what it does not
// return. The seqs of Settle's dead letters are in their subjects: one
// stream info call lists them, no message read (the subject names, a few
// dozen bytes each, as Stats's count already costs). Append's are stored
// in log order, each after its event, so a walk of them in stream order
// from stream seq after+1 meets them in log order and stops at the first
// that does not fit on the page. The two are merged, and only the entries
// on the page are read: about limit gets, whatever the DLQ's size.
// RetryDead and DropDead of chosen seqs cost a get or two per seq;
// RetryDead of all reads every dead letter once, one at a time in the
// order they died; DropDead of all is one purge of P.dlq.<sink>.>.
// A stream written by a build before this layout may hold Settle's dead
// letters on P.dlq.<sink>.<id> (with a Pl-Seq header), where a page can
// miss them, as they are not stored in log order: Open moves them to
// P.dlq.<sink>.seq.<seq> in the background (see migrateDead).
//
// # Delivery records
//
// P.dr.<sink>.<seq> holds the delivery record of the event at seq for one
// sink (state, attempts, first and last attempt, last error, delivered
// at), Nats-TTL = the log's retention. Append writes none: an event with
// a P.q entry and no record is queued, one with a P.dlq written by Append
// is dead. Settle writes it: on Retry in one atomic batch with P.st, on
// Dead with the dead letter, on Ack as one more message, the records of a
// whole Settle call published asynchronously and confirmed before the
// first +ACK (a crash in between delivers the entry again and its record
// counts that attempt too). That message is the cost: Fetch and Settle of
// 64 delivered events went from ~4.5 to ~8 ms on a local R1 server
// (BenchmarkSettle), still faster than Append's ~10-15 ms for 64 events,
// which bounds the throughput. RetryDead and Requeue put
// it in their batch. A fetched entry reads its record only when it was
// delivered before or carries retry state, so a first delivery costs no
// read. Deliveries is a get per sink plus one stream info for the sinks
// an event was replayed to; an Events filter on State costs a get or
// three per event looked at.
//
// # Reads
//
// Reads go to the stream leader (the stream does not allow direct gets
// from replicas, whose answers may lag): Event is a get of the last
// message on P.ev.<id>; Events walks P.ev.> with next-by-subject gets, at
// most 1000 per call.
package jetstreamlog
