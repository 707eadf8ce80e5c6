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

// config is the sink's config table as written in pipeline.toml. The key
// names are a contract with users' configs: add keys, never rename them.
type config struct {
	// WebhookURL exists only to refuse an inline URL with a useful error:
	// the URL carries Slack's token, so it is a secret.
	WebhookURL json.RawMessage `json:"webhook_url"`
	// WebhookURLEnv names the environment variable holding the incoming
	// webhook URL (https://hooks.slack.com/services/T…/B…/…).
	WebhookURLEnv string `json:"webhook_url_env"`
	// WebhookURLFile names a file holding it (a systemd credential, say).
	WebhookURLFile string `json:"webhook_url_file"`
	// Template is a Go text/template rendering the message text when the
	// route's transform does not give a Slack message. It sees .ID,
	// .Source, .Route, .ReceivedAt, .Headers, .Attempt, .Body (the webhook
	// JSON, decoded: map[string]any for an object) and .Transformed. What
	// an action inserts is escaped for Slack (&, <, >); the template's own
	// text is not, so it can use Slack's syntax. Functions: link URL LABEL
	// (<URL|LABEL>, http(s) only), raw V (insert unescaped), duration
	// SECONDS ("2m0s"), json V (compact JSON), truncate N V.
	Template string `json:"template"`
	// TemplateFile names a file holding the template, read by Configure.
	TemplateFile string `json:"template_file"`
	// Username, IconEmoji and Channel override the webhook's defaults in
	// every message when set (legacy webhooks honour them).
	Username  string `json:"username"`
	IconEmoji string `json:"icon_emoji"`
	Channel   string `json:"channel"`
	// Timeout bounds each HTTP request to Slack.
	Timeout sdk.Duration `json:"timeout"`
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

	if c.WebhookURL != nil {
		errs = append(errs, errors.New(`config key "webhook_url" must not be written inline (the URL contains Slack's token): set webhook_url_env (an environment variable) or webhook_url_file (a file) instead`))
	} else if u, err := webhookURL(c.WebhookURLEnv, c.WebhookURLFile); err != nil {
		errs = append(errs, err)
	} else {
		s.webhook = u
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

// webhookURL reads the webhook URL secret and checks that it is an https
// URL (http only to a loopback host, for tests). Its errors name the key
// but never contain the URL or any part of it.
func webhookURL(envVar, file string) (*url.URL, error) {
	v, err := sdk.Secret("webhook_url", envVar, file)
	if err != nil {
		return nil, err
	}
	where := "webhook_url_env: environment variable " + envVar
	if file != "" {
		where = "webhook_url_file: " + file
	}
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
// `pipelined plugins describe slack`.
func describe() sdk.Description {
	return sdk.Description{
		Summary: "Posts one message per event to a Slack incoming webhook, from the route's transform, a template or a default summary.",
		Fields: []sdk.Field{
			{Name: "webhook_url", Type: "string", Required: true, Secret: true,
				Doc: "The incoming webhook URL (https://hooks.slack.com/services/…); it holds Slack's token, so give webhook_url_env or webhook_url_file, never the URL inline."},
			{Name: "template", Type: "string",
				Doc: "A Go text/template for the message text, over .ID, .Source, .Route, .ReceivedAt, .Headers, .Body (the decoded JSON) and .Transformed; inserted values are escaped for Slack. Used when the transform gives no text or blocks."},
			{Name: "template_file", Type: "string",
				Doc: "A file holding the template instead of template; read at configure time."},
			{Name: "username", Type: "string", Doc: "Overrides the message's username when set."},
			{Name: "icon_emoji", Type: "string", Doc: "Overrides the message's icon, e.g. \":telephone_receiver:\", when set."},
			{Name: "channel", Type: "string", Doc: "Overrides the message's channel when set (legacy webhooks only)."},
			{Name: "timeout", Type: "duration", Default: `"10s"`, Doc: "Limit for each HTTP request to Slack."},
		},
	}
}
