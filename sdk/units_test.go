package sdk

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"1000", 1000, false},
		{"64MiB", 64 << 20, false},
		{"64mib", 64 << 20, false},
		{"512 KiB", 512 << 10, false},
		{"1GB", 1e9, false},
		{"1.5KiB", 1536, false},
		{"10B", 10, false},
		{"", 0, true},
		{"big", 0, true},
		{"64MB/s", 0, true},
		{"-1KiB", 0, true},
		{"NaN", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"250ms", 250 * time.Millisecond, false},
		{"24h", 24 * time.Hour, false},
		{"7d", 7 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"", 0, true},
		{"hourly", 0, true},
		{"-1s", 0, true},
		{"xd", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDecodeConfigReportsEveryKey(t *testing.T) {
	var c struct {
		Size  Size     `json:"size"`
		Every Duration `json:"every"`
		Name  string   `json:"name"`
	}
	err := DecodeConfig(json.RawMessage(`{"size": "lots", "every": "often", "nmae": "x", "name": "ok"}`), &c)
	if err == nil {
		t.Fatal("DecodeConfig = nil, want errors for size, every and nmae")
	}
	for _, want := range []string{`"size"`, `"every"`, `"nmae"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeConfig error %q does not name key %s", err, want)
		}
	}
	if c.Name != "ok" {
		t.Errorf("DecodeConfig left name = %q, want the keys that decode set (%q)", c.Name, "ok")
	}
	if err := DecodeConfig(json.RawMessage(`{"size": 2048, "every": "1m"}`), &c); err != nil || c.Size != 2048 || time.Duration(c.Every) != time.Minute {
		t.Errorf("DecodeConfig = %v, size %d, every %v; want nil, 2048, 1m", err, c.Size, time.Duration(c.Every))
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/cred"
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SDK_TEST_SECRET", "from-env")
	tests := []struct {
		env, file, want, wantErr string
	}{
		{"SDK_TEST_SECRET", "", "from-env", ""},
		{"", file, "s3cret", ""},
		{"", "", "", "dsn is required"},
		{"SDK_TEST_SECRET", file, "", "only one of"},
		{"SDK_TEST_UNSET_VARIABLE", "", "", "is not set"},
		{"", dir + "/missing", "", "dsn_file"},
	}
	for _, tt := range tests {
		got, err := Secret("dsn", tt.env, tt.file)
		if got != tt.want || (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Secret(dsn, %q, %q) = %q, %v; want %q, error containing %q", tt.env, tt.file, got, err, tt.want, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Secret error %q contains the secret", err)
		}
	}
}
