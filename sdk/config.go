package sdk

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A sink's config is described once, by its config struct. Each exported
// field is one config key, named by its `json` tag, and may carry:
//
//	doc:"What the key does."           the Field.Doc of the key
//	required:"true"                    the key must be set
//	secret:"true"                      a string read from <key>_env or <key>_file, never inline
//	type:"string or []string"          the Field.Type, when the Go type does not say it
//	default:"\"data/events.db\""        the Field.Default, when the struct's value does not say it
//	                                   (a default that depends on another key)
//
// The value of each field before decoding is its default. From that one
// struct, [DescribeConfig] builds the [Description] (so `pipelined plugins
// describe` and `pipelined check` see it), and [DecodeConfig] decodes the
// config table strictly over the defaults, refuses a missing required key,
// and reads secrets with [Secret]:
//
//	type config struct {
//		Path   string `json:"path" required:"true" doc:"The CSV file."`
//		Header bool   `json:"header" doc:"Write a header row when the file is new."`
//		Token  string `json:"token" secret:"true" doc:"API token."`
//	}
//
//	func defaults() config { return config{Header: true} }
//
//	func (s *sink) Describe() sdk.Description {
//		return sdk.DescribeConfig("Appends one CSV row per event.", defaults())
//	}
//
//	func (s *sink) Configure(_ context.Context, raw json.RawMessage) error {
//		c := defaults()
//		if err := sdk.DecodeConfig(raw, &c); err != nil {
//			return err
//		}
//		... // validate values, then keep c
//	}
//
// sinktest.Run checks that the description and Configure agree: it sets
// every described key and fails when Configure calls one unknown.

// DescribeConfig describes the config keys of the struct defaults (a
// struct, or a pointer to one, holding the default values) as explained
// above: one [Field] per exported field, in field order. Field.Type comes
// from the Go type ([Duration] is "duration", [Size] "size", a string
// slice "[]string", a slice of plain integers "[]int", a map of strings
// "map", another map, struct or json.RawMessage "object") unless a `type`
// tag names it; Field.Default is the field's value written as in TOML (or
// its `default` tag), empty for a zero value. It panics when defaults is
// not a struct: that is a programming error.
func DescribeConfig(summary string, defaults any) Description {
	v := reflect.ValueOf(defaults)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		panic(fmt.Sprintf("sdk.DescribeConfig: defaults is a %T, want a config struct", defaults))
	}
	d := Description{Summary: summary}
	for _, cf := range configFields(v) {
		f := Field{
			Name:     cf.name,
			Type:     cf.typ,
			Required: cf.required,
			Secret:   cf.secret,
			Doc:      cf.doc,
		}
		switch {
		case cf.def != "":
			f.Default = cf.def
		case !cf.value.IsZero() && !cf.secret:
			f.Default = tomlValue(cf.value)
		}
		d.Fields = append(d.Fields, f)
	}
	return d
}

// configField is one key of a config struct.
type configField struct {
	name     string
	typ      string
	required bool
	secret   bool
	doc      string
	def      string        // the default tag
	value    reflect.Value // settable when the struct is addressable
}

// configFields lists the keys of the config struct st, in field order.
func configFields(st reflect.Value) []configField {
	var out []configField
	t := st.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name := sf.Name
		if tag, ok := sf.Tag.Lookup("json"); ok {
			tn, _, _ := strings.Cut(tag, ",")
			if tn == "-" {
				continue
			}
			if tn != "" {
				name = tn
			}
		}
		cf := configField{
			name:     name,
			typ:      sf.Tag.Get("type"),
			required: sf.Tag.Get("required") == "true",
			secret:   sf.Tag.Get("secret") == "true",
			doc:      sf.Tag.Get("doc"),
			def:      sf.Tag.Get("default"),
			value:    st.Field(i),
		}
		if cf.typ == "" {
			cf.typ = fieldType(sf.Type)
		}
		if cf.secret {
			cf.typ = "string"
		}
		out = append(out, cf)
	}
	return out
}

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
	rawType      = reflect.TypeFor[json.RawMessage]()

	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// fieldType names the Field.Type of a Go type.
func fieldType(t reflect.Type) string {
	switch t {
	case durationType:
		return "duration"
	case sizeType:
		return "size"
	case rawType:
		return "object"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Slice:
		switch t.Elem().Kind() {
		case reflect.String:
			return "[]string"
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64: // not Uint8: []byte is JSON base64
			// Plain integers only: a []Duration is written as strings.
			p := reflect.PointerTo(t.Elem())
			if !p.Implements(jsonUnmarshalerType) && !p.Implements(textUnmarshalerType) {
				return "[]int"
			}
		}
	case reflect.Map:
		if t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.String {
			return "map"
		}
	case reflect.Pointer:
		return fieldType(t.Elem())
	}
	return "object"
}

// tomlValue writes a default value as it would be written in TOML.
func tomlValue(v reflect.Value) string {
	if v.Type() == durationType {
		// "1h", not Go's "1h0m0s".
		s := time.Duration(v.Int()).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return strconv.Quote(s)
	}
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		if b, err := m.MarshalText(); err == nil {
			return strconv.Quote(string(b))
		}
	}
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.String {
			parts := make([]string, v.Len())
			for i := range v.Len() {
				parts[i] = strconv.Quote(v.Index(i).String())
			}
			return "[" + strings.Join(parts, ", ") + "]"
		}
		if fieldType(v.Type()) == "[]int" {
			parts := make([]string, v.Len())
			for i := range v.Len() {
				parts[i] = fmt.Sprint(v.Index(i).Interface())
			}
			return "[" + strings.Join(parts, ", ") + "]"
		}
	case reflect.Map:
		if v.Type().Key().Kind() == reflect.String && v.Type().Elem().Kind() == reflect.String {
			keys := make([]string, 0, v.Len())
			for _, k := range v.MapKeys() {
				keys = append(keys, k.String())
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = fmt.Sprintf("%q = %q", k, v.MapIndex(reflect.ValueOf(k)).String())
			}
			return "{ " + strings.Join(parts, ", ") + " }"
		}
	}
	b, _ := json.Marshal(v.Interface())
	return string(b)
}
