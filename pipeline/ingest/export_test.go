package ingest

import "testing"

// DupKey is dupKey for the external tests: the first key that one object
// of a valid body has twice, found by encoding/json's tokens.
func DupKey(t *testing.T, body []byte) (string, bool) { return dupKey(t, body) }

// NotUTF8 is notUTF8 for the external tests: the whole body's check, which
// ingest skips when its decoder saw nothing that could fail it.
func NotUTF8(body []byte) string { return notUTF8(body) }
