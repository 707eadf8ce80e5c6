package config

import (
	"net/url"
	"regexp"
	"strings"
)

// DefaultStream is the JetStream stream [Log.Stream] defaults to.
const DefaultStream = "PIPELINED"

var streamName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// validateJetStream checks the [log] keys of backend = "jetstream".
func validateJetStream(c *Config, at func(table string, idx int, key, format string, args ...any)) {
	l := c.Log
	if len(l.URLs) == 0 {
		at("log", -1, "backend", `log.urls: backend = "jetstream" needs the NATS servers (write e.g. urls = ["nats://127.0.0.1:4222"])`)
	}
	for _, u := range l.URLs {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls" && p.Scheme != "ws" && p.Scheme != "wss") {
			at("log", -1, "urls", `log.urls: %q is not a NATS URL (write e.g. "nats://10.0.0.1:4222")`, u)
		} else if p.User != nil {
			at("log", -1, "urls", `log.urls: %q holds credentials; secrets never go inline: use creds_file or nkey_file`, p.Redacted())
		}
	}
	if l.Stream != "" && !streamName.MatchString(l.Stream) {
		at("log", -1, "stream", `log.stream: %q may hold only letters, digits, - and _ (default %q)`, l.Stream, DefaultStream)
	}
	if l.Replicas != 0 && l.Replicas != 1 && l.Replicas != 3 {
		at("log", -1, "replicas", "log.replicas: %d; write 1 (one server) or 3 (a cluster of 3, tolerating one failure)", l.Replicas)
	}
	if l.CredsFile != "" && l.NKeyFile != "" {
		at("log", -1, "nkey_file", "log.nkey_file: set creds_file or nkey_file, not both")
	}
	if (l.TLSCertFile == "") != (l.TLSKeyFile == "") {
		at("log", -1, "tls_cert_file", "log.tls_cert_file and log.tls_key_file: set both (a client certificate) or neither")
	}
}
