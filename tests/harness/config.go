package harness

import (
	"fmt"
	"strings"
)

// The pieces of pipeline.toml that the suites' configurations share.
// Concatenated, they make a configuration; a suite adds its own sinks.

// Listeners returns the [server] and [admin] tables, both listening on a
// free loopback port (the daemon logs which when ready), with serverKeys
// (TOML lines, may be empty) added to [server].
func Listeners(serverKeys string) string {
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
%s
[admin]
listen = "127.0.0.1:0"
`, serverKeys)
}

// BadgerLog returns the [log] table of a Badger log in dir.
func BadgerLog(dir string) string {
	return fmt.Sprintf(`
[log]
dir = %q
`, dir)
}

// CallKaroSource is the [[source]] of the CallKaro webhook at
// /hooks/callkaro: no authentication, deduplicated by callSid for 24h.
const CallKaroSource = `
[[source]]
name = "callkaro"
path = "/hooks/callkaro"
dedup_key = "body.data.callSid"
dedup_window = "24h"
auth = { type = "none" }
`

// AllCallsRoute returns the route "all-calls": every call_ended event to
// the sinks named.
func AllCallsRoute(to ...string) string {
	return route("all-calls", `body.event == "call_ended"`, to)
}

// InterestedRoute returns the route "interested": the calls whose lead
// status is "interested" to the sinks named. A transform = line written
// right after it belongs to it.
func InterestedRoute(to ...string) string {
	return route("interested", `body.data?.post_call?.lead_status == "interested"`, to)
}

func route(name, when string, to []string) string {
	q := make([]string, len(to))
	for i, s := range to {
		q[i] = fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf(`
[[route]]
name = %q
when = '%s'
to = [%s]
`, name, when, strings.Join(q, ", "))
}

// HTTPSink returns a [[sink]] name of the http plugin that posts to url,
// with delivery (the inside of its delivery = { ... }) when not "".
func HTTPSink(name, url, delivery string) string {
	s := fmt.Sprintf("\n[[sink]]\nname = %q\nplugin = \"http\"\nconfig = { url = %q }\n", name, url)
	if delivery != "" {
		s += "delivery = { " + delivery + " }\n"
	}
	return s
}
