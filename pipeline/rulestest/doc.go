// Package rulestest runs the test cases of pipeline.toml's rules: each case
// is a request (source, headers, body) and what pipelined must do with it
// (status, matched routes, sinks, transformed payloads, dedup), checked
// without a daemon, a log or plugins.
//
// # Test files
//
// A test file is TOML, strict like the configuration (unknown keys are
// errors):
//
//	env = { CALLKARO_SECRET = "test-only" }   # optional, set for every case
//
//	[[test]]
//	name = "interested lead"
//	source = "callkaro"                       # optional with one [[source]]
//	body_file = "call_ended.json"             # or body = '''{"event": ...}'''
//	headers = { "webhook-id" = "msg_1" }      # optional
//	query = "token=test-only"                 # optional: the URL's query string (a url-token source's token)
//	received_at = 2025-12-19T16:01:07Z        # optional, default 2025-01-01T00:00:00Z
//	expect_status = 200                       # default 200; 422 when the source's accept or schema refuses
//	expect_routes = ["all-calls", "interested-leads"]
//	expect_sinks = ["archive", "leads"]
//	expect_transform = { leads = { call = "2303fa", seconds = 120 } }
//	expect_dedup_key = "2303fa"
//
//	[[test]]
//	name = "sent twice"
//	body_file = "call_ended.json"
//	expect_duplicate_of = "interested lead"
//
// Each case goes through the daemon's own decision step, ingest's
// [ingest.Config.Decide], so its status and reason are the daemon's to the
// letter: content type (415), body size (413), the source's auth (401),
// JSON (400), the source's ignore rule (200, ignored: no route, no sink;
// expecting one fails the case), the source's accept rule and schema
// (422); then the dedup key and every route. Only what needs the network is left out: paths,
// methods, allow_cidrs, request slots and rate limits. An expectation left
// out is not checked; an empty list expects none. A runtime error in a
// rule (a when, a transform or the dedup key) fails the case: the daemon
// would log it and count it.
//
// expect_routes lists every route whose when is true, even one that adds no
// sink because an earlier route already delivers to the same sinks.
// expect_transform maps a sink name to the payload that sink receives: the
// transform of the first matching route naming the sink, or the body as it
// was sent when that route has none. A TOML value is compared as JSON; a
// string is read as JSON text, to write what TOML cannot (null).
//
// Cases are independent: each runs as if it were the first event the
// daemon sees, except expect_duplicate_of, which names an earlier case and
// expects the same source, the same non-empty dedup key and a received_at
// within the source's dedup window. A duplicate is answered 200 and not
// routed, so that case takes no routing expectations.
//
// # Secrets
//
// A source's secrets come from environment variables (secret_env) or files
// (secret_file). The file's env and a case's env set variables, over the
// process environment, while the configuration is loaded and while a case
// runs; a case's env is applied over the file's and the source's auth
// check is built again with it. Signed timestamps (standard-webhooks,
// stripe) are checked against the case's received_at.
package rulestest
