package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Telemetry configures OpenTelemetry tracing ([telemetry]). An empty
// OTLPEndpoint, the default, turns tracing off: no exporter, no spans.
type Telemetry struct {
	// OTLPEndpoint is the collector's URL: http://host:4317 (gRPC) or
	// http://host:4318 (http/protobuf); https:// for TLS.
	OTLPEndpoint string `toml:"otlp_endpoint"`
	// Protocol is "grpc" (the default) or "http/protobuf".
	Protocol string `toml:"protocol"`
	// ServiceName is the service.name of every span (default "pipelined").
	ServiceName string `toml:"service_name"`
	// SampleRatio is the share of new traces sampled, 0 to 1 (default 1);
	// a request that comes with a traceparent follows the sender's choice.
	SampleRatio *float64 `toml:"sample_ratio"`
	// HeadersEnv names an environment variable, HeadersFile a file, that
	// holds the headers sent with every export ("name=value" pairs
	// separated by commas or newlines), e.g. an exporter token. At most one.
	HeadersEnv  string `toml:"headers_env"`
	HeadersFile string `toml:"headers_file"`
	// TLSCAFile verifies the collector; TLSCertFile and TLSKeyFile are the
	// client certificate, both or neither.
	TLSCAFile   string `toml:"tls_ca_file"`
	TLSCertFile string `toml:"tls_cert_file"`
	TLSKeyFile  string `toml:"tls_key_file"`
}

// Telemetry defaults.
const (
	DefaultTelemetryProtocol = "grpc"
	DefaultServiceName       = "pipelined"
	DefaultSampleRatio       = 1.0
)

// Enabled reports whether tracing is on.
func (t Telemetry) Enabled() bool { return strings.TrimSpace(t.OTLPEndpoint) != "" }

// Ratio returns sample_ratio, or its default when it is not set.
func (t Telemetry) Ratio() float64 {
	if t.SampleRatio == nil {
		return DefaultSampleRatio
	}
	return *t.SampleRatio
}

// checkTelemetry checks [telemetry].
func (c *Config) checkTelemetry(p *problems) {
	t := c.Telemetry
	switch t.Protocol {
	case "grpc", "http/protobuf":
	default:
		p.at("telemetry", -1, "protocol", `telemetry.protocol: unknown protocol %q (write "grpc" or "http/protobuf")`, t.Protocol)
	}
	if r := t.Ratio(); r < 0 || r > 1 {
		p.at("telemetry", -1, "sample_ratio", "telemetry.sample_ratio: %v is not between 0 and 1 (write e.g. 0.1 to sample one trace in ten)", r)
	}
	if strings.TrimSpace(t.ServiceName) == "" {
		p.at("telemetry", -1, "service_name", "telemetry.service_name: must not be empty (default %q)", DefaultServiceName)
	}
	if t.Enabled() {
		u, err := url.Parse(t.OTLPEndpoint)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			p.at("telemetry", -1, "otlp_endpoint", `telemetry.otlp_endpoint: %q is not an http:// or https:// URL (write e.g. "http://127.0.0.1:4317" for grpc, "http://127.0.0.1:4318" for http/protobuf)`, t.OTLPEndpoint)
		case u.User != nil:
			p.at("telemetry", -1, "otlp_endpoint", "telemetry.otlp_endpoint: %q holds credentials; secrets never go inline: use headers_env or headers_file", u.Redacted())
		}
	}
	if (t.TLSCertFile == "") != (t.TLSKeyFile == "") {
		p.at("telemetry", -1, "tls_cert_file", "telemetry.tls_cert_file and telemetry.tls_key_file: set both (a client certificate) or neither")
	}
	if _, err := c.TelemetryHeaders(); err != nil && !c.secretsOptional {
		p.at("telemetry", -1, "headers_env", "%v", err)
	}
}

// TelemetryHeaders reads the export headers that headers_env or
// headers_file hold; nil when neither is set. Errors name the key, never
// a value.
func (c *Config) TelemetryHeaders() (map[string]string, error) {
	t := c.Telemetry
	var text, key string
	switch {
	case t.HeadersEnv != "" && t.HeadersFile != "":
		return nil, errors.New("telemetry: set only one of headers_env and headers_file")
	case t.HeadersEnv != "":
		key = "telemetry.headers_env"
		v, ok := os.LookupEnv(t.HeadersEnv)
		if !ok || v == "" {
			return nil, fmt.Errorf("%s: environment variable %s is not set (or empty)", key, t.HeadersEnv)
		}
		text = v
	case t.HeadersFile != "":
		key = "telemetry.headers_file"
		name, err := ExpandFile(t.HeadersFile)
		if err != nil {
			return nil, fmt.Errorf("%s %w", key, err)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, c.fileErr(err))
		}
		text = string(b)
	default:
		return nil, nil
	}
	out := map[string]string{}
	for i, f := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == '\n' }) {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name, value, ok := strings.Cut(f, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || !headerNameRE.MatchString(name) {
			return nil, fmt.Errorf("%s: pair %d is not name=value (write e.g. authorization=Bearer%%20<token>, one pair a line or separated by commas)", key, i+1)
		}
		if v, err := url.PathUnescape(strings.TrimSpace(value)); err == nil {
			value = v // OTEL_EXPORTER_OTLP_HEADERS escapes values the same way
		}
		out[strings.ToLower(name)] = strings.TrimSpace(value)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: holds no name=value pair", key)
	}
	return out, nil
}
