package archive

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	d := newSink().Describe()
	if err := d.Validate(); err != nil {
		t.Fatalf("Describe().Validate() = %v", err)
	}

	// The description names exactly the keys of config, in its order.
	var names, tags []string
	for _, f := range d.Fields {
		names = append(names, f.Name)
	}
	ct := reflect.TypeFor[config]()
	for i := range ct.NumField() {
		tags = append(tags, ct.Field(i).Tag.Get("json"))
	}
	if !slices.Equal(names, tags) {
		t.Errorf("Describe() keys = %v, want the config struct's %v", names, tags)
	}

	// Its defaults, as written in TOML, decode to defaultConfig.
	table := map[string]json.RawMessage{"dir": json.RawMessage(`"d"`)}
	for _, f := range d.Fields {
		if f.Default != "" {
			table[f.Name] = json.RawMessage(f.Default)
		}
	}
	raw, _ := json.Marshal(table)
	fromDefaults, err := parseConfig(raw)
	want, _ := parseConfig(json.RawMessage(`{"dir": "d"}`))
	if err != nil || fromDefaults != want {
		t.Errorf("parseConfig(the described defaults %s) = %+v, %v; want %+v", raw, fromDefaults, err, want)
	}
}

// TestDescribeCheck: what the host's Check says about a config table
// agrees with Configure.
func TestDescribeCheck(t *testing.T) {
	d := newSink().Describe()
	tests := []struct {
		raw  string
		want []string // one phrase per problem, in order; nil for a config Configure accepts
	}{
		{`{"dir": "data/archive"}`, nil},
		{`{"dir": "d", "rotate": "15m", "max_size": "512KiB", "compress": "none", "prefix": "calls"}`, nil},
		{`{"dir": "d", "max_size": 1048576, "rotate": "1d"}`, nil},
		{`{}`, []string{`config key "dir" is required: Directory of the archive files`}},
		{`{"dir": "d", "rotation": "1h"}`, []string{`unknown config key "rotation": check its spelling (valid keys: compress, dir, max_size, prefix, rotate)`}},
		{`{"dir": "d", "rotate": "hourly", "max_size": "64MB/s"}`, []string{
			`config key "rotate": invalid duration "hourly"`, `config key "max_size": invalid size "64MB/s"`}},
		{`{"dir": 7, "rotate": 3600, "max_size": true, "compress": false}`, []string{
			`config key "dir": want a string, got a number 7`,
			`config key "rotate": want a duration string`,
			`config key "max_size": want a size`,
			`config key "compress": want a string, got a boolean false`}},
	}
	for _, tt := range tests {
		errs := d.Check(json.RawMessage(tt.raw))
		if len(errs) != len(tt.want) {
			t.Errorf("Check(%s) = %q, want %d problems %q", tt.raw, errs, len(tt.want), tt.want)
			continue
		}
		for i, err := range errs {
			if !strings.Contains(err.Error(), tt.want[i]) {
				t.Errorf("Check(%s) problem %d = %q, want it to contain %q", tt.raw, i, err, tt.want[i])
			}
		}
		_, cerr := parseConfig(json.RawMessage(tt.raw))
		if (cerr == nil) != (tt.want == nil) {
			t.Errorf("parseConfig(%s) = %v, but Check found %d problems: they disagree", tt.raw, cerr, len(errs))
		}
	}
}
