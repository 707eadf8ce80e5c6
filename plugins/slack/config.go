package slack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// config is the sink's config table as written in pipeline.toml, and the
// one description of it: Describe is built from its tags and
// defaultConfig. The key names are a contract with users' configs: add
// keys, never rename them.
type config struct {
	// WebhookURL is the incoming webhook URL
	// (https://hooks.slack.com/services/T…/B…/…), read by DecodeConfig from
	// webhook_url_env or webhook_url_file: it carries Slack's token.
	WebhookURL string `json:"webhook_url" required:"true" secret:"true" doc:"The incoming webhook URL (https://hooks.slack.com/services/…); it holds Slack's token, so give webhook_url_env or webhook_url_file, never the URL inline."`
	// Template is a Go text/template rendering the message text when the
	// route's transform does not give a Slack message. It sees .ID,
	// .Source, .Route, .ReceivedAt, .Headers, .Attempt, .Body (the webhook
	// JSON, decoded: map[string]any for an object) and .Transformed. What
	// an action inserts is escaped for Slack (&, <, >); the template's own
	// text is not, so it can use Slack's syntax. Functions: link URL LABEL
	// (<URL|LABEL>, http(s) only), raw V (insert unescaped), duration
	// SECONDS ("2m0s"), json V (compact JSON), truncate N V.
	Template string `json:"template" doc:"A Go text/template for the message text, over .ID, .Source, .Route, .ReceivedAt, .Headers, .Body (the decoded JSON) and .Transformed; inserted values are escaped for Slack. Used when the transform gives no text or blocks."`
	// TemplateFile names a file holding the template, read by Configure.
	TemplateFile string `json:"template_file" doc:"A file holding the template instead of template; read at configure time."`
	// Username, IconEmoji and Channel override the webhook's defaults in
	// every message when set (legacy webhooks honour them).
	Username  string `json:"username" doc:"Overrides the message's username when set."`
	IconEmoji string `json:"icon_emoji" doc:"Overrides the message's icon, e.g. \":telephone_receiver:\", when set."`
	Channel   string `json:"channel" doc:"Overrides the message's channel when set (legacy webhooks only)."`
	// Timeout bounds each HTTP request to Slack.
	Timeout sdk.Duration `json:"timeout" doc:"Limit for each HTTP request to Slack."`
}

// settings is a validated config.
type settings struct {
	webhook   *url.URL // secret: never print it
	tmpl      *template.Template
	overrides map[string]string // username, icon_emoji, channel when set
	timeout   time.Duration
}

const defaultTimeout = 10 * time.Second

func defaultConfig() config {
	return config{Timeout: sdk.Duration(defaultTimeout)}
}

// parseConfig decodes raw over the defaults and validates it, reporting
// every problem, each naming its key and the fix. It reads the webhook URL
// secret and the template file, and has no other side effects. No error it
// returns contains the webhook URL.
func parseConfig(raw json.RawMessage) (settings, error) {
	c := defaultConfig()
	var s settings
	var errs []error
	if err := sdk.DecodeConfig(raw, &c); err != nil {
		errs = append(errs, err) // and go on: report every problem at once
	}

	if c.WebhookURL != "" { // read; DecodeConfig reported why when it is not
		if u, err := webhookURL(c.WebhookURL, secretSource(raw)); err != nil {
			errs = append(errs, err)
		} else {
			s.webhook = u
		}
	}

	s.timeout = time.Duration(c.Timeout)
	if s.timeout <= 0 {
		errs = append(errs, errors.New(`config key "timeout" must be positive, e.g. "10s"`))
	}

	s.overrides = map[string]string{}
	for k, v := range map[string]string{"username": c.Username, "icon_emoji": c.IconEmoji, "channel": c.Channel} {
		if v != "" {
			s.overrides[k] = v
		}
	}

	switch {
	case c.Template != "" && c.TemplateFile != "":
		errs = append(errs, errors.New(`set only one of config keys "template" and "template_file"`))
	case c.Template != "":
		t, err := parseTemplate("message", c.Template)
		if err != nil {
			errs = append(errs, fmt.Errorf(`config key "template": %w`, err))
		}
		s.tmpl = t
	case c.TemplateFile != "":
		b, err := os.ReadFile(c.TemplateFile)
		if err != nil {
			errs = append(errs, fmt.Errorf(`config key "template_file": %w`, err))
			break
		}
		if strings.TrimSpace(string(b)) == "" {
			errs = append(errs, fmt.Errorf(`config key "template_file": %s is empty`, c.TemplateFile))
			break
		}
		t, err := parseTemplate(c.TemplateFile, string(b))
		if err != nil {
			errs = append(errs, fmt.Errorf(`config key "template_file": %w`, err))
		}
		s.tmpl = t
	}
	return s, errors.Join(errs...)
}

// secretSource says where the webhook URL was read from, for errors:
// "webhook_url_env: environment variable NAME" or "webhook_url_file: PATH".
func secretSource(raw json.RawMessage) string {
	var keys struct {
		Env  string `json:"webhook_url_env"`
		File string `json:"webhook_url_file"`
	}
	json.Unmarshal(raw, &keys) // DecodeConfig has reported any problem
	if keys.File != "" {
		return "webhook_url_file: " + keys.File
	}
	return "webhook_url_env: environment variable " + keys.Env
}

// webhookURL checks that v, the webhook URL secret read from where, is an
// https URL (http only to a loopback host, for tests). Its errors name the
// key but never contain the URL or any part of it.
func webhookURL(v, where string) (*url.URL, error) {
	v = strings.TrimSpace(v)
	// url.Parse's errors quote the input: do not wrap them.
	u, err := url.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("%s does not hold a valid URL (want https://hooks.slack.com/services/…; the value is not shown, it is secret)", where)
	}
	if u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%s does not hold an absolute URL (want https://hooks.slack.com/services/…; the value is not shown, it is secret)", where)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%s holds an http URL: use https (http is allowed only to 127.0.0.1 or localhost, for tests)", where)
		}
	default:
		return nil, fmt.Errorf("%s holds a URL whose scheme is not https (the value is not shown, it is secret)", where)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s holds a URL with user info: Slack webhook URLs carry none", where)
	}
	return u, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// describe is the sink's description for `pipelined check` and
// `pipelined plugins describe slack`, from the config struct.
func describe() sdk.Description {
	return sdk.DescribeConfig("Posts one message per event to a Slack incoming webhook, from the route's transform, a template or a default summary.", defaultConfig())
}
