package ingest

import "testing"

// DupKey is dupKey for the external tests: the first key that one object
// of a valid body has twice, found by encoding/json's tokens.
func DupKey(t *testing.T, body []byte) (string, bool) { return dupKey(t, body) }
