// Package ingest is the HTTP side of pipelined: one [Handler] serves every
// [[source]] by its path, and answers 2xx only once the writer says the
// event is durable (P1). Every refusal is one line of JSON that says why
// (P7).
//
// # The connection, then the request
//
// The handler checks what depends on the connection, in this order: the
// path as sent, escapes and all (400 for an escaped "/", 404 for a path
// that names a source only once unescaped; [RequestPath]), the method
// (405), and the client address against the source's allow_cidrs (403;
// behind server.trusted_proxies, the last untrusted address of
// X-Forwarded-For). A request slot (503 with Retry-After when
// server.max_concurrent requests are in flight) is taken only once the
// request is authenticated, and so is its share of server.max_body_memory
// for decoding its body (503 too), so that strangers cannot use up what
// real senders need. After a 413 the rest of the body is read
// and discarded, within bounds, so that the sender reads the answer.
//
// Everything else is [Config.Decide], a pure decision step that the
// handler and `pipelined test` (package rulestest) both call, so a rule
// test sees what the daemon answers: content type (415: application/json
// or application/*+json), the declared and the actual body size against
// server.max_body (413), the source's authentication (401: Standard
// Webhooks, HMAC, bearer, basic, a token in the URL; package auth), the source's rate limit
// (429 with Retry-After; only authenticated requests count, so a
// stranger's flood never blocks the sender), a request slot (503),
// nesting deeper than [MaxDepth] (400), JSON (400; also a key twice in
// one object, unless the source allows it: readers disagree on which value
// counts), the source's
// ignore rule (200 {"ignored": true}: acknowledged, neither stored nor
// routed, so a sender's new event type never fails), the source's
// accept rule and JSON Schema (422 with the violations, or "too complex
// to check" for a body over the schema's cost bound); then the dedup
// key (the dedup_key expression, or the webhook-id header for Standard
// Webhooks) and every route, which give the [pipeline.Entry] to append.
// Decide neither logs nor counts: it returns what to log and count (rule
// errors, the metrics outcome) and what to keep of a refusal.
//
// # After the decision
//
// The handler appends the entry through an [Appender] (the writer), and
// answers 200 with the event's id, or with the first event's id and
// "duplicate": true when the log absorbed it (P4); 503 with Retry-After
// when the log is overloaded, full or closing. It counts every request by
// source and outcome, route matches and rule errors in package metrics,
// and logs refused authentications and failed rules.
//
// # Rejected requests
//
// A source with keep_rejected keeps its rejected requests (401, 400, 413,
// 415, 422) and the ones its ignore rule acknowledged (200): their headers without credentials
// ([MaxRejectedHeaders] in all), the start of the body ([MaxRejectedBody])
// and the reason, for `pipelined events list --rejected`, at most
// keep_rejected_max bytes per source (the log drops the oldest first,
// counted in pipelined_rejections_evicted_total). [Audit] writes them to the log's own keyspace off the
// request path, through a bounded queue that drops (and counts) what a
// flood of bad requests would add, so that it never slows good ones.
//
// [Handler.Swap] replaces the configuration at once, for a reload.
package ingest
