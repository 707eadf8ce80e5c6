package ingest

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/pipelined/pipelined/pipeline/rules"
)

// Validate applies src's accept rule, then its JSON Schema, to an event
// that passed authentication and JSON decoding (env.Body is the decoded
// body). It returns code 0 when the event may go on to dedup and routing;
// else code is 422, reason one line naming the source and the rule or
// schema, and violations (schema only) the first [rules.MaxViolations]
// problems as "JSON-pointer: what is wrong". `pipelined test` calls it
// too, so a test case sees what ingest answers.
func Validate(src *Source, env *rules.Env) (code int, reason string, violations []string) {
	if src.Accept != nil {
		ok, err := src.Accept.Bool(env)
		switch {
		case err != nil:
			return http.StatusUnprocessableEntity, "source " + strconv.Quote(src.Name) + ": accept rule " + src.Accept.Source() + " failed: " + firstLine(err.Error()), nil
		case !ok:
			return http.StatusUnprocessableEntity, "source " + strconv.Quote(src.Name) + " does not accept this event: accept rule " + src.Accept.Source() + " is false", nil
		}
	}
	if src.Schema != nil {
		if v := src.Schema.Validate(env.Body); len(v) > 0 {
			return http.StatusUnprocessableEntity, "body does not match the schema of source " + strconv.Quote(src.Name) + " (" + src.Schema.Name() + "): " + v[0], v
		}
	}
	return 0, "", nil
}

// firstLine keeps the answer one line: expr errors go on with the
// expression and a caret under the fault.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
