package sinktest

import (
	"bytes"
	_ "embed"
	"fmt"
	"time"

	"github.com/pipelined/pipelined/sdk"
)

// callEnded is a CallKaro call_ended webhook body, as documented by CallKaro.
//
//go:embed testdata/call_ended.json
var callEnded []byte

// callSid is the data.callSid of callEnded, replaced per event by NewEvent.
const callSid = "2303fa770b666a64ab1694c1e"

// baseTime is the ReceivedAt of NewEvent(0); it has nanoseconds on purpose.
var baseTime = time.Date(2025, 12, 19, 16, 1, 7, 123456789, time.UTC)

// NewEvent returns the i-th event of a deterministic stream: a CallKaro
// call_ended webhook (the body as CallKaro sends it, indented JSON) whose
// data.callSid is distinct for each i, with ID "sinktest-<i>" (stable: the
// same i always gives the same event), source "callkaro", route "sinktest",
// Attempt 1 and ReceivedAt one second after event i-1. Transformed is nil;
// set it to test a route with a transform.
func NewEvent(i int) sdk.Event {
	sid := fmt.Sprintf("%s%08x", callSid[:len(callSid)-8], i)
	return sdk.Event{
		ID:         fmt.Sprintf("sinktest-%06d", i),
		Source:     "callkaro",
		Route:      "sinktest",
		ReceivedAt: baseTime.Add(time.Duration(i) * time.Second),
		Headers: map[string]string{
			"content-type": "application/json",
			"user-agent":   "CallKaro-Webhook/1.0",
		},
		Body:    bytes.Replace(callEnded, []byte(callSid), []byte(sid), 1),
		Attempt: 1,
	}
}
