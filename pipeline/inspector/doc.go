// Package inspector is the web UI of the admin listener, the event
// inspector: it answers "did event X reach sink Y, and if not, why?" in a
// browser. [New] returns the handler that the admin server mounts under
// /ui/ ([admin.Options.UI]) when [admin] ui = true (the default).
//
// # Pages
//
//	/ui/                  overview: each sink's state, queue, retrying, oldest age, DLQ, last error,
//	                      delivery rate; each source's requests by outcome over the last 5 minutes
//	/ui/events            events newest first, filtered by source, sink, delivery state, time,
//	                      dedup key and an expr when; cursor paging
//	/ui/events/{id}       one event: headers, body, each sink's delivery timeline; replay, retry
//	/ui/dlq/{sink}        a sink's dead letters: retry selected or all, drop (confirmed)
//	/ui/refused           refused requests kept by sources with keep_rejected
//	/ui/replay            start a replay; /ui/replay/{job} shows its progress live
//	/ui/tail              new events as they are appended (server-sent events); those it had
//	                      no room for are counted and the page says how many it did not show
//
// The pages are html/template files and the CSS and JavaScript are static
// files, all embedded in the binary; nothing is fetched from elsewhere.
// Every answer carries a Content-Security-Policy of default-src 'self'
// with no inline script, and no page evaluates what an event holds: bodies
// and headers are only ever text.
//
// # Authentication
//
// With an admin token, /ui/login exchanges it for a session cookie
// (HttpOnly, SameSite=Strict, valid for [SessionTTL]), signed with a key
// drawn when the daemon starts. The cookie is Secure when the browser came
// over HTTPS: a TLS connection, or a proxy terminating TLS in front that
// says so (X-Forwarded-Proto: https, or Forwarded: proto=https). Without
// a token the UI works only when the admin listener is on loopback (as the
// API), and a session cookie is issued without a login. Every POST carries a CSRF
// token bound to the session; a POST without it is refused with 403. The
// admin server's Host and Origin checks apply to every call.
//
// # Buttons: Post/Redirect/Get
//
// A button that acts (Retry now; an event's replay, retry and give-up;
// dead letters' retry, drop and give-up) answers 303 See Other to the page
// it was pressed on when the action succeeds, and that page says what was
// done once: reloading it shows nothing and posts nothing again. The
// result rides in a flash cookie (HttpOnly, SameSite=Strict, for a
// minute) that names the page it is for, signed with the sessions' key
// and bound to the session, so that no one but the UI writes a message
// into a page. A refused or failed action answers its status (4xx, 5xx)
// with a page that says why, and a drop's confirmation is a page of its
// own; a replay answers 303 to its progress page.
//
// # Bounded pages
//
// Each page reads a bounded part of the log: a page of events newest first
// (on a log that is a [pipeline.NewestFirstLog]), a page of dead letters,
// one event. A filter that the log cannot answer from its index (a when
// expression, a delivery state) looks at events for at most [ScanBudget]
// per page; the page then shows what it found and a link that continues
// where it stopped.
package inspector
