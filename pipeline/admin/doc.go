// Package admin serves the admin API on its own listener, never the ingest
// one: /healthz, /readyz, /metrics, JSON under /v1/ and, when
// [Options.Pprof] is set, Go's profiler under /debug/pprof/.
//
// # The /v1 API
//
//	GET  /v1/events?source=&sink=&state=&since=&until=&dedup_key=&when=&limit=&after=
//	GET  /v1/events/{id}              the event with its deliveries: [{sink, route, state, attempts, ...}]
//	GET  /v1/sinks
//	GET  /v1/sinks/{sink}/dlq?limit=&after=
//	POST /v1/sinks/{sink}/dlq/retry   {"ids": [...]} or {"all": true}
//	POST /v1/sinks/{sink}/dlq/drop    {"ids": [...]} or {"all": true}
//	POST /v1/sinks/{sink}/dlq/add     {"ids": [...], "reason"}, or {"all": true, "reason"} for a removed sink's whole queue
//	POST /v1/replay                   {"sink", "since", "until", "source", "when", "all_events"}
//	POST /v1/reload                   {"status": "reloaded", "restart_needed": [keys that wait for a restart], "socket_owned": [listen keys systemd's sockets hold]}
//
// A list answers fewer than limit events with a next cursor when it
// stopped early (after listPages reads of the log, with a when= after
// whenBudget, or once its events' bodies and headers reach 4 MiB): call
// again with after=next until next is empty.
// Times are RFC 3339 or a duration ago ("1h"). Every error is one line of
// JSON, {"error": "..."}, with its status code. Every call under /v1/ and
// /debug/ needs "Authorization: Bearer <token>" when [Options.Token] is
// set; without a token they are refused with 403 unless
// [Options.AllowUnauthenticated]. /healthz, /readyz and /metrics are open.
// A POST must be Content-Type: application/json (415), and an Origin of
// another site or a Host that is not the listener's is refused (403).
//
// # The web UI
//
// When [Options.UI] is set ([admin] ui = true, the default), the handler
// serves it under /ui/ and GET / redirects there. Its calls pass the same
// Host and Origin checks; it authenticates them itself (package
// pipeline/inspector: a session cookie for the token, a CSRF token on every
// form), and reads the log through the same [Options] and the helpers
// [CompileWhen], [MatchWhen], [Replay] and [TokenMatches].
//
// # Layout
//
// [Handler] and its routing and authentication are in server.go; the
// handlers in events.go (events, rejections), sinks.go (sinks and their
// dead-letter queues) and replay.go; the wire types that both sides share
// in types.go; and [Client], which `pipelined events|sinks|dlq|replay|reload`
// and the end-to-end and torture suites use, in client.go.
package admin
