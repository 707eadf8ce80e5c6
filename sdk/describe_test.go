package sdk

import (
	"encoding/json"
	"strings"
	"testing"
)

var testDescription = Description{
	Summary: "Stores events in a database.",
	Fields: []Field{
		{Name: "dsn", Type: "string", Required: true, Secret: true, Doc: "Where the database is."},
		{Name: "table", Type: "string", Default: `"events"`, Doc: "The table."},
		{Name: "timeout", Type: "duration", Default: `"5s"`, Doc: "Per statement."},
		{Name: "max_size", Type: "size", Doc: "Largest payload."},
		{Name: "workers", Type: "int", Doc: "Connections."},
		{Name: "strict", Type: "bool"},
		{Name: "columns", Type: "[]string"},
		{Name: "codes", Type: "[]int"},
		{Name: "labels", Type: "map"},
		{Name: "mapping", Type: "object"},
		{Name: "dir", Type: "string", Required: true, Doc: "Directory of the spool."},
		{Name: "token", Type: "string", Secret: true},
	},
}

func TestDescriptionCheck(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   []string // one phrase per error, in order
	}{
		{"minimal", `{"dsn_env": "DB_DSN", "dir": "spool"}`, nil},
		{"every key", `{"dsn_file": "/run/credentials/dsn", "dir": "spool", "table": "t", "timeout": "1d2h",
			"max_size": "64MiB", "workers": 4, "strict": true, "columns": ["a", "b"], "codes": [400, 422], "labels": {"k": "v"},
			"mapping": {"a": {"b": 1}}, "token_env": "TOKEN"}`, nil},
		{"size as bytes", `{"dsn_env": "D", "dir": "d", "max_size": 1024}`, nil},
		{"empty config", ``, []string{
			"dsn is required: set dsn_env (an environment variable) or dsn_file (a file)",
			`config key "dir" is required: Directory of the spool`,
		}},
		{"secret inline", `{"dsn": "postgres://u:p@h/db", "dir": "d"}`, []string{
			"dsn is a secret: set dsn_env or dsn_file, never inline",
		}},
		{"secret env and file", `{"dsn_env": "D", "dsn_file": "/f", "dir": "d"}`, []string{
			"set only one of dsn_env and dsn_file",
		}},
		{"secret env not a string", `{"dsn_env": 3, "dir": "d"}`, []string{
			`config key "dsn_env": want a string (the name of an environment variable or a file), got a number 3`,
		}},
		{"unknown keys", `{"dsn_env": "D", "dir": "d", "tabel": "x", "a": 1}`, []string{
			`unknown config key "a": check its spelling (valid keys: codes, columns, dir, dsn_env, dsn_file, labels, mapping, max_size, strict, table, timeout, token_env, token_file, workers)`,
			`unknown config key "tabel"`,
		}},
		{"wrong types", `{"dsn_env": "D", "dir": 1, "table": true, "timeout": 5, "max_size": "lots", "workers": 1.5,
			"strict": "yes", "columns": ["a", 2], "codes": [400, "404"], "labels": {"k": 1}, "mapping": []}`, []string{
			`config key "table": want a string, got a boolean true`,
			`config key "timeout": want a duration string such as "30s" or "24h", got a number 5`,
			`config key "max_size": invalid size "lots"`,
			`config key "workers": want an integer, got 1.5`,
			`config key "strict": want true or false, got a string "yes"`,
			`config key "columns": want an array of strings, but element 1 is a number`,
			`config key "codes": want an array of integers, but element 1 is a string`,
			`config key "labels": want a table of strings, but "k" is a number`,
			`config key "mapping": want a table, got an array`,
			`config key "dir": want a string, got a number 1`,
		}},
		{"bad duration", `{"dsn_env": "D", "dir": "d", "timeout": "5 minutes"}`, []string{
			`config key "timeout": invalid duration "5 minutes"`,
		}},
		{"not a table", `[1, 2]`, []string{"config is not a table of keys"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := testDescription.Check(json.RawMessage(tt.config))
			if len(errs) != len(tt.want) {
				t.Fatalf("Check(%s) = %d errors %q, want %d", tt.config, len(errs), errs, len(tt.want))
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.want[i]) {
					t.Errorf("Check(%s) error %d = %q, want it to contain %q", tt.config, i, err, tt.want[i])
				}
			}
		})
	}
}

// TestDescriptionCheckExplicitSecretKeys: a description may list dsn_env
// itself; then it is an ordinary field and the secret is not "required"
// twice over.
func TestDescriptionCheckExplicitSecretKeys(t *testing.T) {
	d := Description{Summary: "s", Fields: []Field{
		{Name: "url", Type: "string", Secret: true},
		{Name: "url_env", Type: "string", Required: true},
	}}
	if errs := d.Check(json.RawMessage(`{"url_env": "SLACK_URL"}`)); errs != nil {
		t.Errorf("Check(url_env) = %q, want nil", errs)
	}
	errs := d.Check(json.RawMessage(`{"url_file": "/f"}`))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `config key "url_env" is required`) {
		t.Errorf("Check(url_file) = %q, want url_env required", errs)
	}
}

func TestDescriptionValidate(t *testing.T) {
	if err := testDescription.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
	bad := Description{Fields: []Field{
		{Name: "a", Type: "string"},
		{Name: "a", Type: "string"},
		{Name: "", Type: "int"},
		{Name: "b", Type: "number"},
		{Name: "c_env", Type: "string", Secret: true},
	}}
	err := bad.Validate()
	for _, want := range []string{
		"no summary", `field "a" is described twice`, "field 2 has no name",
		`field "b" has type "number"`, `secret field "c_env": name it without the _env/_file suffix`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
}

// TestDescriptionCheckStringOrList: a "string or []string" key takes one
// string or a list of strings, nothing else.
func TestDescriptionCheckStringOrList(t *testing.T) {
	d := Description{Summary: "Signs.", Fields: []Field{{Name: "secret_env", Type: "string or []string"}}}
	if err := d.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	tests := []struct {
		config string
		want   string // "" for no error
	}{
		{`{"secret_env": "NEW"}`, ""},
		{`{"secret_env": ["NEW", "OLD"]}`, ""},
		{`{"secret_env": 3}`, `config key "secret_env": want a string or an array of strings, got a number 3`},
		{`{"secret_env": ["NEW", 3]}`, `config key "secret_env": want a string or an array of strings`},
	}
	for _, tt := range tests {
		wantCheck(t, d, tt.config, tt.want)
	}
}

// TestDescriptionCheckIntList: a "[]int" key takes a list of whole
// numbers, nothing else.
func TestDescriptionCheckIntList(t *testing.T) {
	d := Description{Summary: "Posts.", Fields: []Field{{Name: "permanent_status", Type: "[]int"}}}
	if err := d.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	tests := []struct {
		config string
		want   string // "" for no error
	}{
		{`{"permanent_status": []}`, ""},
		{`{"permanent_status": [400, 413, 422]}`, ""},
		{`{"permanent_status": 400}`, `config key "permanent_status": want an array of integers, got a number 400`},
		{`{"permanent_status": "400"}`, `config key "permanent_status": want an array of integers, got a string "400"`},
		{`{"permanent_status": [400, "413"]}`, `config key "permanent_status": want an array of integers, but element 1 is a string`},
		{`{"permanent_status": [400.5]}`, `config key "permanent_status": want an array of integers, but element 0 is 400.5`},
	}
	for _, tt := range tests {
		wantCheck(t, d, tt.config, tt.want)
	}
}

// wantCheck checks that d.Check(config) finds no error (want "") or one
// error containing want.
func wantCheck(t *testing.T, d Description, config, want string) {
	t.Helper()
	errs := d.Check(json.RawMessage(config))
	switch {
	case want == "" && len(errs) != 0:
		t.Errorf("Check(%s) = %v, want no error", config, errs)
	case want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), want)):
		t.Errorf("Check(%s) = %v, want one error containing %q", config, errs, want)
	}
}
