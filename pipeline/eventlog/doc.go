// Package eventlog is the home of the event log's backends. The interfaces
// they implement, [pipeline.Log], [pipeline.Queue] and the optional
// capabilities, live in package pipeline; this directory holds what
// implements them and the suite that checks them:
//
//   - badgerlog: the embedded, durable log on Badger, with its write-ahead
//     log (internal/wal) and record format (internal/logpb);
//   - jetstreamlog: one log shared by several daemons, on a NATS JetStream
//     stream;
//   - memlog: in memory, for tests;
//   - logtest: the conformance suite every backend passes.
//
// Each backend owns its options, the keys it stores and the size figures it
// reports; pipeline/daemon fills a backend's Options from the [log] section
// of the config. What the backends share lives here: the form of a kept
// rejection's id ([RejectionID]), which is also the cursor of its listing.
package eventlog
