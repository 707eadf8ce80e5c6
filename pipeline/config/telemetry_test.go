package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTelemetry(t *testing.T) {
	t.Setenv("TEST_OTLP_HEADERS", "authorization=Bearer%20s3cret-token,x-tenant=acme")
	dir := t.TempDir()
	hf := filepath.Join(dir, "otlp-headers")
	if err := os.WriteFile(hf, []byte("authorization=Bearer file-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, toml string
		wantErr    []string // each in the error; none: it loads
		check      func(t *testing.T, c *Config)
	}{
		{name: "off by default", check: func(t *testing.T, c *Config) {
			if c.Telemetry.Enabled() || c.Telemetry.Protocol != "grpc" || c.Telemetry.ServiceName != "pipelined" || c.Telemetry.Ratio() != 1 {
				t.Errorf("defaults = %+v (ratio %v), want off, grpc, pipelined, 1", c.Telemetry, c.Telemetry.Ratio())
			}
		}},
		{name: "every key", toml: `[telemetry]
otlp_endpoint = "https://otel.example:4318"
protocol = "http/protobuf"
service_name = "hooks"
sample_ratio = 0.0
headers_env = "TEST_OTLP_HEADERS"
tls_ca_file = "ca.pem"
`, check: func(t *testing.T, c *Config) {
			tc := c.Telemetry
			if !tc.Enabled() || tc.Protocol != "http/protobuf" || tc.ServiceName != "hooks" || tc.Ratio() != 0 {
				t.Errorf("telemetry = %+v (ratio %v)", tc, tc.Ratio())
			}
			if tc.TLSCAFile != filepath.Join(c.BaseDir(), "ca.pem") {
				t.Errorf("tls_ca_file = %q, want it relative to the config's directory", tc.TLSCAFile)
			}
			h, err := c.TelemetryHeaders()
			if err != nil || h["authorization"] != "Bearer s3cret-token" || h["x-tenant"] != "acme" {
				t.Errorf("TelemetryHeaders() = %v, %v", h, err)
			}
		}},
		{name: "headers file", toml: "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nheaders_file = " + `"` + hf + `"`,
			check: func(t *testing.T, c *Config) {
				if h, err := c.TelemetryHeaders(); err != nil || h["authorization"] != "Bearer file-s3cret" {
					t.Errorf("TelemetryHeaders() = %v, %v", h, err)
				}
			}},
		{name: "bad values", toml: `[telemetry]
otlp_endpoint = "127.0.0.1:4317"
protocol = "thrift"
sample_ratio = 1.5
tls_cert_file = "c.pem"
`, wantErr: []string{"telemetry.otlp_endpoint", "telemetry.protocol", "telemetry.sample_ratio", "telemetry.tls_cert_file"}},
		{name: "credentials in the URL", toml: "[telemetry]\notlp_endpoint = \"http://user:s3cret@127.0.0.1:4317\"",
			wantErr: []string{"holds credentials"}},
		{name: "missing headers secret", toml: "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nheaders_env = \"TEST_OTLP_UNSET\"",
			wantErr: []string{"TEST_OTLP_UNSET is not set"}},
		{name: "unknown key", toml: "[telemetry]\nendpoint = \"http://127.0.0.1:4317\"", wantErr: []string{`unknown key "telemetry.endpoint"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(filepath.Join(dir, "pipeline.toml"), []byte(tc.toml))
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Parse = %v, want nil", err)
				}
				tc.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("Parse = nil error, want %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error = %v\nwant it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Parse error shows a secret: %v", err)
			}
		})
	}
}
