package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// printer runs one admin command with the client and prints its answer:
// the API's JSON as it is with --json, else a table or a sentence. In
// these, every string of the answer goes through [cell] (or [termSafe]):
// the answer holds what webhook senders wrote.
type printer struct {
	c              *admin.Client
	asJSON         bool
	newest         bool // events list --newest
	stdout, stderr io.Writer
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// list makes one list call with get and prints its page: the API's JSON as
// it is with --json, else a table of header and the lines rows writes,
// then, on stderr, how to ask for the next page (next, once get ran).
func (p *printer) list(get func(c *admin.Client) error, next *string, header string, rows func(io.Writer)) error {
	var raw []byte
	if err := get(p.c.WithRaw(&raw)); err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	tw := table(p.stdout)
	fmt.Fprintln(tw, header)
	rows(tw)
	if err := tw.Flush(); err != nil {
		return err
	}
	if *next != "" {
		more := "more: add --after " + cell(*next)
		if p.newest {
			more += " (with --newest: the cursors of the two orders differ)"
		}
		fmt.Fprintln(p.stderr, more)
	}
	return nil
}

func (p *printer) eventsList(q url.Values) error {
	var list admin.EventList
	err := p.list(func(c *admin.Client) (err error) { list, err = c.Events(context.Background(), q); return err }, &list.Next,
		"ID\tSEQ\tRECEIVED_AT\tSOURCE\tSINKS\tDEDUP_KEY", func(w io.Writer) {
			for _, e := range list.Events {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", cell(e.ID), e.Seq, fmtTime(e.ReceivedAt), cell(e.Source), orDash(cell(strings.Join(e.Sinks, ","))), orDash(cell(e.DedupKey)))
			}
		})
	if sink := q.Get("sink"); err == nil && sink != "" && len(list.Events) == 0 {
		p.noteUnknownSink(sink)
	}
	return err
}

// noteUnknownSink says on stderr when sink, a filter that matched nothing,
// is no sink the daemon knows (a typo reads like "nothing there"). Events
// of a sink removed from the file can still be listed, so it is a note.
func (p *printer) noteUnknownSink(sink string) {
	ss, err := p.c.Sinks(context.Background())
	if err != nil {
		return
	}
	names := make([]string, 0, len(ss))
	for _, s := range ss {
		if s.Name == sink {
			return
		}
		names = append(names, cell(s.Name))
	}
	known := "it has none"
	if len(names) > 0 {
		known = "sinks: " + strings.Join(names, ", ")
	}
	fmt.Fprintf(p.stderr, "note: the daemon has no sink %q (%s)\n", sink, known)
}

// deliveries prints what happened to e at each sink, as a table whose
// headings are the JSON keys.
func (p *printer) deliveries(e admin.Event) error {
	switch {
	case e.Deliveries == nil:
		_, err := fmt.Fprintln(p.stdout, "deliveries:\tnot recorded by this log backend")
		return err
	case len(e.Deliveries) == 0:
		_, err := fmt.Fprintln(p.stdout, "deliveries:\t- (routed to no sink)")
		return err
	}
	fmt.Fprintln(p.stdout, "deliveries:")
	tw := table(p.stdout)
	// The headings are the JSON keys of a delivery record, upper-cased;
	// DROPPED_AT only when a record has one (an operator dropped a dead
	// letter of the event).
	dropped := slices.ContainsFunc(e.Deliveries, func(d admin.Delivery) bool { return d.DroppedAt != nil })
	head := "  SINK\tROUTE\tSTATE\tATTEMPTS\tFIRST_ATTEMPT_AT\tLAST_ATTEMPT_AT\tDELIVERED_AT\tNEXT_ATTEMPT_AT"
	if dropped {
		head += "\tDROPPED_AT"
	}
	fmt.Fprintln(tw, head+"\tLAST_ERROR")
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return fmtTime(*t)
	}
	failed, notAttempted := false, false
	for _, d := range e.Deliveries {
		next := at(d.NextAttemptAt)
		if d.Held {
			next = "held" // behind its order_key, or the breaker's probes
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s", cell(d.Sink), orDash(cell(d.Route)), cell(d.State), d.Attempts,
			at(d.FirstAttemptAt), at(d.LastAttemptAt), at(d.DeliveredAt), next)
		if dropped {
			fmt.Fprintf(tw, "\t%s", at(d.DroppedAt))
		}
		fmt.Fprintf(tw, "\t%s\n", orDash(cell(strings.Join(strings.Fields(d.LastError), " "))))
		failed = failed || len(d.Failures) > 0
		notAttempted = notAttempted || d.NotAttemptedReason != ""
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if notAttempted {
		// Why an event waits that its last error (an attempt's) does
		// not explain: the rest of a batch after a 503 with Retry-After.
		fmt.Fprintln(p.stdout, "not attempted at the sink's latest call (no attempt counted):")
		tw = table(p.stdout)
		fmt.Fprintln(tw, "  SINK\tREASON")
		for _, d := range e.Deliveries {
			if d.NotAttemptedReason != "" {
				fmt.Fprintf(tw, "  %s\t%s\n", cell(d.Sink), cell(strings.Join(strings.Fields(d.NotAttemptedReason), " ")))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if !failed {
		return nil
	}
	fmt.Fprintln(p.stdout, "failures (the latest of each sink, oldest first):")
	tw = table(p.stdout)
	fmt.Fprintln(tw, "  SINK\tATTEMPT\tAT\tERROR")
	for _, d := range e.Deliveries {
		for _, f := range d.Failures {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", cell(d.Sink), f.Attempt, fmtTime(f.At), orDash(cell(strings.Join(strings.Fields(f.Error), " "))))
		}
	}
	return tw.Flush()
}

func (p *printer) rejectionsList(q url.Values) error {
	var list admin.RejectionList
	return p.list(func(c *admin.Client) (err error) { list, err = c.Rejections(context.Background(), q); return err }, &list.Next,
		"RECEIVED_AT\tSOURCE\tSTATUS\tREMOTE_ADDR\tREASON", func(w io.Writer) {
			for _, r := range list.Rejections {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", fmtTime(r.ReceivedAt), cell(r.Source), r.Status, orDash(cell(r.RemoteAddr)), cell(r.Reason))
			}
		})
}

func (p *printer) eventShow(id string) error {
	var raw []byte
	e, err := p.c.WithRaw(&raw).Event(context.Background(), id)
	if err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	tw := table(p.stdout)
	fmt.Fprintf(tw, "id:\t%s\nseq:\t%d\nsource:\t%s\nreceived_at:\t%s\nauth:\t%s\ndedup_key:\t%s\nsinks:\t%s\n",
		cell(e.ID), e.Seq, cell(e.Source), e.ReceivedAt.UTC().Format(time.RFC3339Nano), orDash(cell(e.Auth)), orDash(cell(e.DedupKey)), orDash(cell(strings.Join(e.Sinks, ", "))))
	for _, k := range sortedKeys(e.Headers) {
		fmt.Fprintf(tw, "header %s:\t%s\n", cell(k), cell(e.Headers[k]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := p.deliveries(e); err != nil {
		return err
	}
	var body bytes.Buffer
	if json.Indent(&body, e.Body, "", "  ") != nil {
		body.Reset()
		body.Write(e.Body)
	}
	// JSON has no raw controls in its strings, but it may have DEL, C1,
	// bidi controls and bytes that are not UTF-8. termSafe writes the
	// characters as JSON escapes, so the body still reads (and decodes) as
	// the same JSON; --json has it as the daemon sent it.
	_, err = fmt.Fprintf(p.stdout, "body:\n%s\n", termSafe(body.String(), true))
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (p *printer) sinks() error {
	var raw []byte
	list, err := p.c.WithRaw(&raw).SinkList(context.Background())
	if err != nil {
		return err
	}
	sinks := list.Sinks
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	tw := table(p.stdout)
	// The headings are the JSON keys of --json, upper-cased.
	fmt.Fprintln(tw, "NAME\tPLUGIN\tBREAKER\tPAUSED\tREADY\tRETRYING\tOLDEST_AGE_SECONDS\tDEAD\tHELD_KEYS\tOLDEST_HELD_AGE_SECONDS\tIN_FLIGHT\tIN_FLIGHT_SECONDS\tNEXT_PROBE_SECONDS\tNEXT_RETRY_SECONDS\tLAST_ERROR")
	for _, s := range sinks {
		oldest := "-"
		if s.OldestAgeSeconds > 0 {
			oldest = strconv.FormatFloat(math.Round(s.OldestAgeSeconds), 'f', 0, 64)
		}
		plugin := cell(s.Plugin)
		if s.PluginReason != "" {
			plugin += ": " + oneLine(s.PluginReason)
		}
		lastErr := lastErrorCell(s.Name, s.LastError)
		if lastErr != "" && !s.LastErrorAt.IsZero() {
			lastErr = fmtAge(time.Since(s.LastErrorAt)) + " ago: " + lastErr
		}
		paused := "-"
		if s.Paused {
			paused = "paused"
		}
		heldKeys, oldestHeld := heldCells(s)
		ready, retrying, dead := strconv.Itoa(s.Ready), strconv.Itoa(s.Retrying), strconv.Itoa(s.Dead)
		switch {
		case s.Rebuilding:
			ready, retrying, dead = "rebuilding", "-", "-"
		case s.QueueError != "":
			ready, retrying, dead = "unknown", "-", "-"
		}
		inFlight, inFlightSecs := "-", "-"
		if s.InFlight > 0 {
			inFlight, inFlightSecs = strconv.Itoa(s.InFlight), strconv.FormatFloat(math.Round(s.InFlightSeconds), 'f', 0, 64)
		}
		// Rounded up, as the time until something is due: 0.4 s is 1.
		nextProbe, nextRetry := "-", "-"
		if s.NextProbeSeconds > 0 {
			nextProbe = strconv.FormatFloat(math.Ceil(s.NextProbeSeconds), 'f', 0, 64)
		}
		if s.NextRetrySeconds > 0 {
			nextRetry = strconv.FormatFloat(math.Ceil(s.NextRetrySeconds), 'f', 0, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cell(s.Name), plugin, orDash(cell(s.Breaker)), paused,
			ready, retrying, oldest, dead, heldKeys, oldestHeld, inFlight, inFlightSecs, nextProbe, nextRetry, orDash(lastErr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range sinks {
		if s.QueueError != "" {
			fmt.Fprintf(p.stderr, "sink %s: its queue could not be counted: %s\n", cell(s.Name), oneLine(s.QueueError))
		}
	}
	if r := list.QueuesRebuild; r != nil {
		fmt.Fprintf(p.stderr, "the sinks' queues are being rebuilt after the start: %d of about %d events read; the counts follow once it is done, and delivery starts then\n", r.Read, r.Total)
		if r.Error != "" {
			fmt.Fprintf(p.stderr, "its last attempt failed (it is tried again; see the daemon's log): %s\n", oneLine(r.Error))
		}
	}
	return nil
}

// heldCells are the HELD_KEYS and OLDEST_HELD_AGE_SECONDS cells of a sink
// (delivery.order_key): "-" when nothing is held.
func heldCells(s admin.SinkStatus) (keys, oldest string) {
	if s.HeldKeys == 0 {
		return "-", "-"
	}
	oldest = "-"
	if s.OldestHeldAgeSeconds > 0 {
		oldest = strconv.FormatFloat(math.Round(s.OldestHeldAgeSeconds), 'f', 0, 64)
	}
	return strconv.Itoa(s.HeldKeys), oldest
}

// lastErrorCell puts a sink's last error on one line for the LAST ERROR
// column, without the `sink "NAME": ` its row already says, cut at 120
// bytes (--json has it whole), then made safe for the terminal: the
// escapes can make it longer.
func lastErrorCell(sink, msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	msg = strings.TrimPrefix(msg, fmt.Sprintf("sink %q: ", sink))
	return cell(cut(msg, 120))
}

// fmtAge prints an age to the second, or in minutes or hours when long.
func fmtAge(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// oneLine puts s on one line, cut at 80 bytes, and makes it safe for the
// terminal (the escapes can make it longer).
func oneLine(s string) string {
	return cell(cut(strings.Join(strings.Fields(s), " "), 80))
}

func (p *printer) dlqList(sink string, q url.Values) error {
	var v admin.DeadLetterList
	return p.list(func(c *admin.Client) (err error) { v, err = c.DeadLetters(context.Background(), sink, q); return err }, &v.Next,
		"ID\tSEQ\tFAILED_AT\tATTEMPTS\tROUTE\tERROR", func(w io.Writer) {
			for _, d := range v.DeadLetters {
				fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\t%s\n", cell(d.ID), d.Seq, fmtTime(d.FailedAt), d.Attempts, orDash(cell(d.Route)), orDash(oneLine(d.Error)))
			}
		})
}

func (p *printer) dlqSettle(action, sink string, req admin.DeadLetterRequest) error {
	var raw []byte
	res, err := p.c.WithRaw(&raw).SettleDead(context.Background(), action, sink, req)
	if err != nil {
		return err
	}
	if p.asJSON {
		p.stdout.Write(raw)
	} else {
		switch {
		case action == "add" && req.All:
			fmt.Fprintf(p.stdout, "gave up on %d event(s) waiting for %s, a sink removed from the configuration: they are in its dead-letter queue now (pipelined dlq drop %s --all deletes them)\n",
				res.Count, sink, sink)
		case action == "add" && res.Count == 0: // the error below says why
		case action == "add":
			fmt.Fprintf(p.stdout, "gave up on %d event(s) of %s: each goes to its dead-letter queue at its next turn\n", res.Count, sink)
		default:
			verb := map[string]string{"retry": "retried", "drop": "dropped"}[action]
			fmt.Fprintf(p.stdout, "%s %d dead letter(s) of %s\n", verb, res.Count, sink)
		}
		for _, id := range res.IDs {
			fmt.Fprintln(p.stdout, cell(id))
		}
		if res.IDsOmitted > 0 {
			fmt.Fprintf(p.stdout, "… and %d more\n", res.IDsOmitted)
		}
	}
	if len(res.NotFound) > 0 {
		where := "in the dead-letter queue of"
		if action == "add" {
			where = "waiting in the queue of"
		}
		ids := make([]string, len(res.NotFound))
		for i, id := range res.NotFound {
			ids[i] = cell(id) // on the error's one line
		}
		return fmt.Errorf("not %s %s: %s", where, sink, strings.Join(ids, ", "))
	}
	return nil
}

func (p *printer) replay(req admin.ReplayRequest) error {
	bar := isTerminal(p.stderr) && !p.asJSON
	var progress func(admin.ReplayProgress)
	if bar {
		progress = func(pr admin.ReplayProgress) { drawBar(p.stderr, pr) }
	}
	var raw []byte
	last, err := p.c.WithRaw(&raw).Replay(context.Background(), req, progress)
	if bar {
		fmt.Fprintln(p.stderr)
	}
	if err != nil {
		return err
	}
	if p.asJSON {
		p.stdout.Write(append(raw, '\n'))
	} else {
		dead := ""
		if last.InDeadLetterQueue > 0 {
			// A replay leaves a dead letter where it is: say so, and how
			// to send it again.
			dead = fmt.Sprintf(", %d in the dead-letter queue (not replayed: pipelined dlq retry %s --id ID, or --all)",
				last.InDeadLetterQueue, req.Sink)
		}
		// AlreadyQueued counts the dead letters too (see
		// admin.ReplayProgress).
		fmt.Fprintf(p.stdout, "replayed to %s: %d enqueued, %d already queued%s (%d matched of %d scanned)\n",
			req.Sink, last.Enqueued, last.AlreadyQueued-last.InDeadLetterQueue, dead, last.Matched, last.Scanned)
	}
	if last.Error != "" {
		return fmt.Errorf("replay stopped after %d enqueued: %s", last.Enqueued, last.Error)
	}
	return nil
}

// drawBar draws the replay's progress through its time range on one line.
func drawBar(w io.Writer, p admin.ReplayProgress) {
	const width = 30
	frac := 1.0
	if !p.Done {
		span := p.Until.Sub(p.Since)
		frac = 0
		if span > 0 && !p.At.IsZero() {
			frac = min(max(float64(p.At.Sub(p.Since))/float64(span), 0), 1)
		}
	}
	n := int(frac * width)
	fmt.Fprintf(w, "\r[%s%s] %3.0f%%  %d scanned, %d enqueued", strings.Repeat("=", n), strings.Repeat(" ", width-n), frac*100, p.Scanned, p.Enqueued)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *printer) pauseSink(sink string, paused bool) error {
	var raw []byte
	res, err := p.c.WithRaw(&raw).PauseSink(context.Background(), sink, paused)
	if err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	switch {
	case res.Paused && res.Changed:
		_, err = fmt.Fprintf(p.stdout, "sink %s paused: its events wait until `pipelined sinks resume %s`\n", sink, sink)
	case res.Paused:
		_, err = fmt.Fprintf(p.stdout, "sink %s was paused already\n", sink)
	case res.Changed:
		_, err = fmt.Fprintf(p.stdout, "sink %s resumed\n", sink)
	default:
		_, err = fmt.Fprintf(p.stdout, "sink %s was not paused\n", sink)
	}
	return err
}

// isSinksSub reports whether arg is a subcommand of pipelined sinks.
func isSinksSub(arg string) bool {
	return arg == "pause" || arg == "resume" || arg == "retry-now"
}

func (p *printer) retryNow(sink string) error {
	var raw []byte
	res, err := p.c.WithRaw(&raw).RetryNow(context.Background(), sink)
	if err != nil {
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	events := "events"
	if res.Hastened == 1 {
		events = "event"
	}
	line := fmt.Sprintf("sink %s: %d %s waiting for a retry made due now", sink, res.Hastened, events)
	switch {
	case res.Paused:
		line += fmt.Sprintf("; the sink is paused: they wait until `pipelined sinks resume %s`", sink)
		if res.Probing {
			line += ", and its open breaker probes then"
		}
	case res.Probing:
		line += "; its breaker is open: probing now (every event waiting goes once a probe succeeds)"
	default:
		line += "; its breaker is closed"
	}
	_, err = fmt.Fprintln(p.stdout, line)
	return err
}

// reloadWait bounds pipelined reload: under the admin listener's default
// write_timeout (60s), after which the answer would be lost, and systemd's
// timeout for the unit's ExecReload.
var reloadWait = 55 * time.Second

func (p *printer) reload() error {
	ctx, cancel := context.WithTimeout(context.Background(), reloadWait)
	defer cancel()
	var raw []byte
	res, err := p.c.WithRaw(&raw).Reload(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: no answer, so the reload may or may not have been applied: the daemon's log says which", err)
		}
		return err
	}
	if p.asJSON {
		_, err := p.stdout.Write(raw)
		return err
	}
	if len(res.RestartNeeded) == 0 && len(res.SocketOwned) == 0 {
		_, err = fmt.Fprintln(p.stdout, "configuration reloaded")
		return err
	}
	var but []string
	if len(res.RestartNeeded) > 0 {
		but = append(but, fmt.Sprintf("for %s: these take effect only at a restart, and the daemon runs with their old values until then", cell(strings.Join(res.RestartNeeded, ", "))))
	}
	if len(res.SocketOwned) > 0 {
		but = append(but, fmt.Sprintf("%s cannot change: systemd passes that listener (socket activation) and its socket unit owns the address: change ListenStream= there, then restart the socket unit", cell(strings.Join(res.SocketOwned, ", "))))
	}
	_, err = fmt.Fprintf(p.stdout, "configuration reloaded, but %s\n", strings.Join(but, "; and "))
	return err
}
