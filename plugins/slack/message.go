package slack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"

	"github.com/pipelined/pipelined/sdk"
)

// Messages
//
// A message is the JSON body of one POST to the webhook. It is, in order:
//
//  1. the route's transform output (Event.Transformed), posted as is, when
//     it is a JSON object with "text" and/or "blocks" (Block Kit);
//  2. else the config's template rendered over the event, as {"text": …};
//  3. else a default text: a summary of a CallKaro call_ended event, or for
//     any other body "event <id> from <source> (route <route>)" and a
//     compact JSON excerpt of the body.
//
// The username, icon_emoji and channel config keys, when set, are added to
// (and override those of) every message.

// excerptMax is how many characters of a body the generic message shows.
const excerptMax = 2000

// escaper escapes text for Slack's mrkdwn: only &, < and > are special.
var escaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// escape returns s with &, < and > escaped as Slack asks.
func escape(s string) string { return escaper.Replace(s) }

// slackText is text already formatted for Slack (a link made by the link
// template function, or a value passed through raw): the template escaper
// leaves it alone.
type slackText string

// link formats a Slack link <url|label>. A URL that is not http(s) gives
// the escaped label alone, so user data cannot build other kinds of links
// (<!channel>, <@U123>).
func link(rawURL, label string) slackText {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return slackText(escape(label))
	}
	target := strings.ReplaceAll(escape(rawURL), "|", "%7C")
	if label == "" {
		return slackText("<" + target + ">")
	}
	return slackText("<" + target + "|" + escape(label) + ">")
}

// text formats a decoded JSON value for a message, unescaped: strings as
// they are, whole numbers without exponent, objects and arrays as compact
// JSON, nil as "".
func text(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case slackText:
		return string(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case json.Number:
		return v.String()
	case bool, int, int64, time.Time, time.Duration:
		return fmt.Sprint(v)
	case map[string]any, []any:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err == nil {
			return strings.TrimSuffix(b.String(), "\n")
		}
	}
	return fmt.Sprint(v)
}

// seconds reads a number of seconds (a JSON number or a numeric string) as a
// duration rounded to the second.
func seconds(v any) (time.Duration, bool) {
	var f float64
	switch v := v.(type) {
	case float64:
		f = v
	case json.Number:
		x, err := v.Float64()
		if err != nil {
			return 0, false
		}
		f = x
	case string:
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return 0, false
		}
		f = x
	case int:
		f = float64(v)
	default:
		return 0, false
	}
	if f < 0 || f > 1e9 || f != f {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)).Round(time.Second), true
}

// truncate cuts s to at most n characters, marking the cut with "…".
func truncate(n int, s string) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j] + "…"
		}
		i++
	}
	return s
}

// escapeFunc is the name under which every action of a template is piped
// through templateEscape; a user cannot call it (template identifiers are
// checked at parse time, and the name is documented nowhere).
const escapeFunc = "_slack_escape"

// templateFuncs are the functions a template can call. Values inserted by
// an action are escaped for Slack unless they come from link or raw.
var templateFuncs = template.FuncMap{
	escapeFunc: templateEscape,
	// link URL LABEL formats a Slack link <URL|LABEL>.
	"link": func(u, label any) slackText { return link(text(u), text(label)) },
	// raw V inserts V without escaping (to write Slack's own syntax).
	"raw": func(v any) slackText { return slackText(text(v)) },
	// duration SECONDS formats a number of seconds as "2m0s".
	"duration": func(v any) string {
		if d, ok := seconds(v); ok {
			return d.String()
		}
		return text(v)
	},
	// json V formats V as compact JSON.
	"json": func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			return text(v)
		}
		return string(b)
	},
	// truncate N V cuts V's text to N characters.
	"truncate": func(n int, v any) string { return truncate(n, text(v)) },
}

func templateEscape(v any) slackText {
	if s, ok := v.(slackText); ok {
		return s
	}
	return slackText(escape(text(v)))
}

// parseTemplate parses a message template and makes every action of it
// escape what it inserts, the way html/template does for HTML: the
// template's own text is the author's Slack markup, the event's data is
// not.
func parseTemplate(name, src string) (*template.Template, error) {
	t, err := template.New(name).Funcs(templateFuncs).Parse(src)
	if err != nil {
		return nil, err
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			escapeActions(tt.Tree.Root)
		}
	}
	return t, nil
}

// escapeActions appends the escaper to the pipeline of every action that
// prints something.
func escapeActions(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			escapeActions(c)
		}
	case *parse.ActionNode:
		if len(n.Pipe.Decl) > 0 {
			return // {{$x := …}} prints nothing
		}
		n.Pipe.Cmds = append(n.Pipe.Cmds, &parse.CommandNode{
			NodeType: parse.NodeCommand,
			Pos:      n.Pos,
			Args:     []parse.Node{parse.NewIdentifier(escapeFunc).SetPos(n.Pos)},
		})
	case *parse.IfNode:
		escapeActions(n.List)
		escapeActions(n.ElseList)
	case *parse.RangeNode:
		escapeActions(n.List)
		escapeActions(n.ElseList)
	case *parse.WithNode:
		escapeActions(n.List)
		escapeActions(n.ElseList)
	}
}

// templateData is what a template sees.
type templateData struct {
	ID          string
	Source      string
	Route       string
	ReceivedAt  time.Time
	Headers     map[string]string
	Body        any // the webhook body, decoded (map[string]any for an object)
	Transformed any // the route's transform output, decoded; nil without one
	Attempt     int
}

// errNotMessage means the transform output is not a Slack message.
var errNotMessage = errors.New("not a slack message")

// message builds the JSON body posted for ev. Its error means the event
// can never be posted (a template that fails on it).
func (s *settings) message(ev *sdk.Event) ([]byte, error) {
	msg, err := transformedMessage(ev.Transformed)
	if err != nil {
		var txt string
		if s.tmpl != nil {
			txt, err = s.render(ev)
			if err != nil {
				return nil, err
			}
		} else {
			txt = defaultText(ev)
		}
		b, _ := marshal(txt)
		msg = map[string]json.RawMessage{"text": b}
	}
	for k, v := range s.overrides {
		msg[k], _ = marshal(v)
	}
	return marshal(msg)
}

// transformedMessage returns the transform output as a message when it is
// a JSON object with "text" or "blocks".
func transformedMessage(raw json.RawMessage) (map[string]json.RawMessage, error) {
	if len(raw) == 0 {
		return nil, errNotMessage
	}
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &msg); err != nil || msg == nil {
		return nil, errNotMessage
	}
	_, hasText := msg["text"]
	_, hasBlocks := msg["blocks"]
	if !hasText && !hasBlocks {
		return nil, errNotMessage
	}
	return msg, nil
}

func (s *settings) render(ev *sdk.Event) (string, error) {
	d := templateData{
		ID:         ev.ID,
		Source:     ev.Source,
		Route:      ev.Route,
		ReceivedAt: ev.ReceivedAt,
		Headers:    ev.Headers,
		Attempt:    ev.Attempt,
	}
	_ = json.Unmarshal(ev.Body, &d.Body)
	if len(ev.Transformed) > 0 {
		_ = json.Unmarshal(ev.Transformed, &d.Transformed)
	}
	var b strings.Builder
	if err := s.tmpl.Execute(&b, d); err != nil {
		return "", fmt.Errorf("render template: %w", err)
	}
	if strings.TrimSpace(b.String()) == "" {
		return "", errors.New("the template rendered an empty message for this event (Slack refuses a message without text)")
	}
	return b.String(), nil
}

// defaultText is the message text without a transform or template.
func defaultText(ev *sdk.Event) string {
	var body map[string]any
	if json.Unmarshal(ev.Body, &body) == nil && body["event"] == "call_ended" {
		if data, ok := body["data"].(map[string]any); ok {
			return callEndedText(data)
		}
	}
	return genericText(ev)
}

// callEndedText summarises a CallKaro call_ended event.
func callEndedText(data map[string]any) string {
	who := func(k string) string {
		if s := text(data[k]); s != "" {
			return escape(s)
		}
		return "unknown"
	}
	var b strings.Builder
	fmt.Fprintf(&b, ":telephone_receiver: *Call ended*: %s → %s", who("from"), who("to"))
	if d, ok := seconds(data["call_duration"]); ok {
		fmt.Fprintf(&b, "\nDuration: %s", d)
	}
	if pc, ok := data["post_call"].(map[string]any); ok {
		if s := text(pc["lead_status"]); s != "" {
			fmt.Fprintf(&b, "\nLead status: %s", escape(s))
		}
	}
	if s := text(data["hangup_reason"]); s != "" {
		fmt.Fprintf(&b, "\nHangup reason: %s", escape(s))
	}
	if u, ok := data["call_link"].(string); ok && u != "" {
		fmt.Fprintf(&b, "\n%s", link(u, "Open call"))
	}
	return b.String()
}

// genericText names the event and shows a compact excerpt of its body.
func genericText(ev *sdk.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "event %s from %s", escape(ev.ID), escape(ev.Source))
	if ev.Route != "" {
		fmt.Fprintf(&b, " (route %s)", escape(ev.Route))
	}
	var compact bytes.Buffer
	body := ev.Body
	if json.Compact(&compact, ev.Body) == nil {
		body = compact.Bytes()
	}
	if len(body) > 0 {
		excerpt := strings.ToValidUTF8(string(body), "\uFFFD")
		// Cut before escaping, so the cut never splits an entity.
		fmt.Fprintf(&b, "\n```%s```", escape(truncate(excerptMax, excerpt)))
	}
	return b.String()
}

// marshal encodes v as JSON without escaping <, > and & (Slack reads the
// JSON; the text is escaped for Slack already).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
