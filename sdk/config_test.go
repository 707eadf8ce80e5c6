package sdk_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

type described struct {
	Dir     string            `json:"dir" required:"true" doc:"Where files go."`
	Rotate  sdk.Duration      `json:"rotate" doc:"Rotate after this long."`
	MaxSize sdk.Size          `json:"max_size"`
	Header  bool              `json:"header"`
	Workers int               `json:"workers"`
	Tags    []string          `json:"tags"`
	Extra   map[string]string `json:"extra"`
	Token   string            `json:"token" secret:"true" doc:"API token."`
	Any     json.RawMessage   `json:"any" type:"string or []string"`
	Codes   []int             `json:"codes"`
	Waits   []sdk.Duration    `json:"waits"` // integers underneath, strings in the config
	// hidden is unexported: DescribeConfig must leave it out of Fields,
	// and TestDescribeConfig fails if it does not. Nothing reads it, so
	// staticcheck's U1000 reports it; it is here on purpose.
	hidden int
}

func describedDefaults() described {
	return described{Rotate: sdk.Duration(time.Hour), MaxSize: 64 << 20, Header: true, Workers: 2, Tags: []string{"a"}, Codes: []int{400, 422}}
}

func TestDescribeConfig(t *testing.T) {
	d := sdk.DescribeConfig("Writes files.", describedDefaults())
	if err := d.Validate(); err != nil {
		t.Fatalf("DescribeConfig(...).Validate() = %v", err)
	}
	want := []sdk.Field{
		{Name: "dir", Type: "string", Required: true, Doc: "Where files go."},
		{Name: "rotate", Type: "duration", Default: `"1h"`, Doc: "Rotate after this long."},
		{Name: "max_size", Type: "size", Default: `"64MiB"`},
		{Name: "header", Type: "bool", Default: "true"},
		{Name: "workers", Type: "int", Default: "2"},
		{Name: "tags", Type: "[]string", Default: `["a"]`},
		{Name: "extra", Type: "map"},
		{Name: "token", Type: "string", Secret: true, Doc: "API token."},
		{Name: "any", Type: "string or []string"},
		{Name: "codes", Type: "[]int", Default: "[400, 422]"},
		{Name: "waits", Type: "object"},
	}
	if !reflect.DeepEqual(d.Fields, want) {
		t.Errorf("DescribeConfig fields =\n%+v\nwant\n%+v", d.Fields, want)
	}
	// The described defaults decode back to the defaults.
	table := map[string]json.RawMessage{"dir": json.RawMessage(`"d"`)}
	for _, f := range d.Fields {
		if f.Default != "" {
			table[f.Name] = json.RawMessage(f.Default)
		}
	}
	raw, _ := json.Marshal(table)
	var got described
	if err := sdk.DecodeConfig(raw, &got); err != nil {
		t.Fatalf("DecodeConfig(described defaults %s) = %v", raw, err)
	}
	wantCfg := describedDefaults()
	wantCfg.Dir = "d"
	if !reflect.DeepEqual(got, wantCfg) {
		t.Errorf("DecodeConfig(described defaults) = %+v, want %+v", got, wantCfg)
	}
	if errs := d.Check(raw); errs != nil {
		t.Errorf("Check(described defaults) = %v", errs)
	}
}

func TestDecodeConfigTags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SDK_TEST_TOKEN", "from-env")
	tests := []struct {
		name      string
		raw       string
		wantToken string
		wantErr   []string
	}{
		{"defaults", `{"dir": "d"}`, "", nil},
		{"secret from env", `{"dir": "d", "token_env": "SDK_TEST_TOKEN"}`, "from-env", nil},
		{"secret from file", `{"dir": "d", "token_file": "` + file + `"}`, "from-file", nil},
		{"required missing", `{}`, "", []string{`config key "dir" is required: Where files go`}},
		{"secret inline", `{"dir": "d", "token": "x"}`, "", []string{`config key "token" must not be written inline: it is a secret, never put it in the config; set token_env (an environment variable) or token_file (a file) instead`}},
		{"secret both", `{"dir": "d", "token_env": "SDK_TEST_TOKEN", "token_file": "f"}`, "", []string{"set only one of token_env and token_file"}},
		{"secret empty", `{"dir": "d", "token_env": " "}`, "", []string{`config key "token_env" is empty`}},
		{"secret unset", `{"dir": "d", "token_env": "SDK_TEST_NO_SUCH"}`, "", []string{"environment variable SDK_TEST_NO_SUCH is not set"}},
		{"unknown lists secret keys", `{"dir": "d", "tokn_env": "X"}`, "", []string{
			`unknown config key "tokn_env": check its spelling (valid keys: any, codes, dir, extra, header, max_size, rotate, tags, token_env, token_file, waits, workers)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := describedDefaults()
			err := sdk.DecodeConfig(json.RawMessage(tt.raw), &c)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("DecodeConfig(%s) = %v, want nil", tt.raw, err)
				}
				if c.Token != tt.wantToken {
					t.Errorf("DecodeConfig(%s) token = %q, want %q", tt.raw, c.Token, tt.wantToken)
				}
				return
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("DecodeConfig(%s) = %v, want an error containing %q", tt.raw, err, w)
				}
			}
			if err != nil && strings.Contains(err.Error(), "from-") {
				t.Errorf("DecodeConfig(%s) = %v: the error holds the secret", tt.raw, err)
			}
		})
	}
}
