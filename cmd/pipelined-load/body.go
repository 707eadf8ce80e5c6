package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// defaultPayload is the CallKaro call_ended webhook (a copy of the project's
// shared test payload, embedded so the binary needs no files).
//
//go:embed testdata/call_ended.json
var defaultPayload []byte

// bodyTemplate is a payload split around the value of data.callSid, so a
// request body is rendered by appending prefix, an id and suffix: no JSON
// encoding in the hot loop, and every other byte exactly as in the payload.
type bodyTemplate struct {
	prefix []byte // up to and including the opening quote of the callSid value
	suffix []byte // from the closing quote on
	orig   string // the callSid of the payload
}

// newBodyTemplate parses payload, which must be a JSON object whose "data"
// member is an object with a string "callSid".
func newBodyTemplate(payload []byte) (*bodyTemplate, error) {
	if !json.Valid(payload) {
		return nil, errors.New("payload is not valid JSON")
	}
	start, end, orig, err := findCallSid(payload)
	if err != nil {
		return nil, err
	}
	return &bodyTemplate{
		prefix: bytes.Clone(payload[:start+1]),
		suffix: bytes.Clone(payload[end-1:]),
		orig:   orig,
	}, nil
}

// size is the length of a rendered body without its id.
func (t *bodyTemplate) size() int { return len(t.prefix) + len(t.suffix) }

// render appends the payload with data.callSid set to sid to dst. sid must
// need no JSON escaping (the ids this program makes are [0-9a-z-]).
func (t *bodyTemplate) render(dst, sid []byte) []byte {
	dst = append(dst, t.prefix...)
	dst = append(dst, sid...)
	return append(dst, t.suffix...)
}

// findCallSid returns the byte range [start, end) of the string token that
// is the value of data.callSid (quotes included) and its decoded value.
func findCallSid(payload []byte) (start, end int, value string, err error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	missing := errors.New(`payload has no string "data.callSid" to replace`)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, 0, "", errors.New("payload is not a JSON object")
	}
	if !seekKey(dec, "data") {
		return 0, 0, "", missing
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, 0, "", missing
	}
	if !seekKey(dec, "callSid") {
		return 0, 0, "", missing
	}
	off := int(dec.InputOffset()) // just after the key
	tok, err := dec.Token()
	s, ok := tok.(string)
	if err != nil || !ok {
		return 0, 0, "", fmt.Errorf("payload's data.callSid is not a string")
	}
	end = int(dec.InputOffset())
	i := bytes.IndexByte(payload[off:end], '"')
	if i < 0 || payload[end-1] != '"' {
		return 0, 0, "", fmt.Errorf("cannot locate data.callSid in the payload")
	}
	return off + i, end, s, nil
}

// seekKey reads members of the object the decoder is in until the key name,
// leaving the decoder before its value. It reports false at the object's end.
func seekKey(dec *json.Decoder, name string) bool {
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if k, _ := tok.(string); k == name {
			return true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil && err != io.EOF {
			return false
		}
	}
	return false
}
