package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Describer is an optional interface of a [Sink]: a sink that describes its
// config lets the host check a [[sink]] config table before Configure is
// called (`pipelined check` reports every problem against the description)
// and print it (`pipelined plugins describe NAME`).
type Describer interface {
	// Describe returns the sink's description. It is called before
	// Configure, must not depend on it, and must be cheap.
	Describe() Description
}

// Description says what a sink does and which config keys it takes.
type Description struct {
	// Summary is one sentence: what the sink delivers to.
	Summary string
	// Fields lists the config keys, in the order a reader should see them.
	Fields []Field
}

// Field is one config key of a sink.
type Field struct {
	// Name is the key as written in the config table ("dir", "dsn_env").
	Name string
	// Type is one of "string", "int", "bool", "duration", "size",
	// "[]string", "string or []string" (one string or a list of them, as a
	// secret_env key naming the new and the old secret during a rotation),
	// "[]int" (a list of whole numbers, as HTTP status codes), "map" (a
	// table of strings) or "object" (any table).
	Type string
	// Default is the value used when the key is absent, as it would be
	// written in TOML; empty when there is none.
	Default string
	// Required keys must be present.
	Required bool
	// Secret marks a key whose value must never be written inline: the
	// config names an environment variable or a file instead, with the
	// keys Name+"_env" / Name+"_file" (read it with [Secret]).
	Secret bool
	// Doc says what the key does, in one or two sentences.
	Doc string
}

// fieldTypes are the values Field.Type may take.
var fieldTypes = []string{"string", "int", "bool", "duration", "size", "[]string", "string or []string", "[]int", "map", "object"}

// Validate reports mistakes in the description itself, every one of them:
// an empty summary, a field without a name or with a name used twice, a
// Type not among those [Field] lists, and a Secret field named with its
// _env or _file suffix (name it "dsn", not "dsn_env": the suffixed keys are
// implied). sinktest.Run calls it for every sink that is a [Describer].
func (d Description) Validate() error {
	var errs []error
	if strings.TrimSpace(d.Summary) == "" {
		errs = append(errs, errors.New("description has no summary: say in one sentence what the sink delivers to"))
	}
	seen := map[string]bool{}
	for i, f := range d.Fields {
		switch {
		case f.Name == "":
			errs = append(errs, fmt.Errorf("field %d has no name", i))
			continue
		case seen[f.Name]:
			errs = append(errs, fmt.Errorf("field %q is described twice", f.Name))
		}
		seen[f.Name] = true
		if !slices.Contains(fieldTypes, f.Type) {
			errs = append(errs, fmt.Errorf("field %q has type %q, want one of %s", f.Name, f.Type, strings.Join(fieldTypes, ", ")))
		}
		if f.Secret && (strings.HasSuffix(f.Name, "_env") || strings.HasSuffix(f.Name, "_file")) {
			errs = append(errs, fmt.Errorf("secret field %q: name it without the _env/_file suffix (the config keys %s_env and %s_file are implied)",
				f.Name, strings.TrimSuffix(strings.TrimSuffix(f.Name, "_env"), "_file"), strings.TrimSuffix(strings.TrimSuffix(f.Name, "_env"), "_file")))
		}
	}
	return errors.Join(errs...)
}

// Check checks a sink's config table (a JSON object, as Configure gets it)
// against the description and returns every problem, each naming its key,
// in the order of d.Fields, then unknown keys in sorted order; nil when the
// config fits. It reports:
//
//   - a key no field describes, listing the valid keys;
//   - a Required key that is missing;
//   - a value of the wrong type for its Field.Type: "string", "bool",
//     "int" (a whole number), "duration" (a string [ParseDuration] reads),
//     "size" (a string [ParseSize] reads, or a whole number of bytes),
//     "[]string", "string or []string", "[]int", "map" (a table of strings),
//     "object" (any table); a field of another type takes any value;
//   - a Secret field written inline.
//
// A Secret field named "dsn" is written as dsn_env (the name of an
// environment variable) or dsn_file (a path), never as dsn: Check accepts
// those two keys implicitly (they need not be listed in Fields, and are
// strings), refuses both at once, and for a Required secret wants one of
// them. Check does not replace Configure: it catches what a description can
// say, before the plugin is configured; the sink still validates values.
func (d Description) Check(config json.RawMessage) []error {
	var table map[string]json.RawMessage
	if len(bytes.TrimSpace(config)) > 0 {
		if err := json.Unmarshal(config, &table); err != nil || bytes.TrimSpace(config)[0] != '{' {
			return []error{fmt.Errorf("config is not a table of keys: %s", bytes.TrimSpace(config))}
		}
	}
	explicit := map[string]bool{}
	for _, f := range d.Fields {
		explicit[f.Name] = true
	}
	used := map[string]bool{}
	valid := map[string]bool{}
	var errs []error
	for _, f := range d.Fields {
		if !f.Secret {
			valid[f.Name] = true
			used[f.Name] = true
			raw, ok := table[f.Name]
			switch {
			case !ok && f.Required:
				errs = append(errs, requiredError(f))
			case ok:
				if err := checkType(f.Type, raw); err != nil {
					errs = append(errs, fmt.Errorf("config key %q: %w", f.Name, err))
				}
			}
			continue
		}
		envKey, fileKey := f.Name+"_env", f.Name+"_file"
		valid[envKey], valid[fileKey] = true, true
		used[f.Name] = true
		_, inline := table[f.Name]
		if inline {
			errs = append(errs, fmt.Errorf("%s is a secret: set %s or %s, never inline", f.Name, envKey, fileKey))
		}
		var set []string
		for _, k := range []string{envKey, fileKey} {
			if explicit[k] {
				continue // described on its own: checked as that field
			}
			used[k] = true
			raw, ok := table[k]
			if !ok {
				continue
			}
			set = append(set, k)
			var s string
			if json.Unmarshal(raw, &s) != nil || raw[0] != '"' {
				errs = append(errs, fmt.Errorf("config key %q: want a string (the name of an environment variable or a file), got %s", k, kindOf(raw)))
			} else if strings.TrimSpace(s) == "" {
				errs = append(errs, fmt.Errorf("config key %q is empty", k))
			}
		}
		switch {
		case len(set) == 2:
			errs = append(errs, fmt.Errorf("set only one of %s and %s", envKey, fileKey))
		case len(set) == 0 && !inline && f.Required && !explicit[envKey] && !explicit[fileKey]:
			errs = append(errs, fmt.Errorf("%s is required: set %s (an environment variable) or %s (a file); never write it inline", f.Name, envKey, fileKey))
		}
	}
	var unknown []string
	for k := range table {
		if !used[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		keys := make([]string, 0, len(valid))
		for k := range valid {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range unknown {
			errs = append(errs, fmt.Errorf("unknown config key %q: check its spelling (valid keys: %s)", k, strings.Join(keys, ", ")))
		}
	}
	return errs
}

func requiredError(f Field) error {
	if f.Doc != "" {
		return fmt.Errorf("config key %q is required: %s", f.Name, strings.TrimSuffix(f.Doc, "."))
	}
	return fmt.Errorf("config key %q is required", f.Name)
}

// checkType reports whether raw is a value of the field type typ.
func checkType(typ string, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	got := kindOf(raw)
	switch typ {
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("want a string, got %s", got)
		}
	case "bool":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("want true or false, got %s", got)
		}
	case "int":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("want an integer, got %s", got)
		}
		if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
			return fmt.Errorf("want an integer, got %s", n)
		}
	case "duration":
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf(`want a duration string such as "30s" or "24h", got %s`, got)
		}
		if _, err := ParseDuration(s); err != nil {
			return err
		}
	case "size":
		switch s := v.(type) {
		case string:
			if _, err := ParseSize(s); err != nil {
				return err
			}
		case json.Number:
			if n, err := strconv.ParseInt(s.String(), 10, 64); err != nil || n < 0 {
				return fmt.Errorf("want a size such as \"64MiB\" or a whole number of bytes, got %s", s)
			}
		default:
			return fmt.Errorf(`want a size such as "64MiB" or a number of bytes, got %s`, got)
		}
	case "string or []string":
		if _, ok := v.(string); ok {
			return nil
		}
		if err := checkType("[]string", raw); err != nil {
			return fmt.Errorf("want a string or an array of strings, got %s", got)
		}
	case "[]string":
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("want an array of strings, got %s", got)
		}
		for i, e := range list {
			if _, ok := e.(string); !ok {
				return fmt.Errorf("want an array of strings, but element %d is %s", i, kindOfValue(e))
			}
		}
	case "[]int":
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("want an array of integers, got %s", got)
		}
		for i, e := range list {
			n, ok := e.(json.Number)
			if !ok {
				return fmt.Errorf("want an array of integers, but element %d is %s", i, kindOfValue(e))
			}
			if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
				return fmt.Errorf("want an array of integers, but element %d is %s", i, n)
			}
		}
	case "map":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("want a table of strings, got %s", got)
		}
		for k, e := range m {
			if _, ok := e.(string); !ok {
				return fmt.Errorf("want a table of strings, but %q is %s", k, kindOfValue(e))
			}
		}
	case "object":
		if _, ok := v.(map[string]any); !ok {
			return fmt.Errorf("want a table, got %s", got)
		}
	}
	return nil
}

// kindOf names the kind of a JSON value the way a TOML writer thinks of
// it, with the value when it is short.
func kindOf(raw json.RawMessage) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return "invalid JSON"
	}
	k := kindOfValue(v)
	if s := string(bytes.TrimSpace(raw)); len(s) <= 40 {
		switch v.(type) {
		case string, json.Number, bool:
			return k + " " + s
		}
	}
	return k
}

func kindOfValue(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
