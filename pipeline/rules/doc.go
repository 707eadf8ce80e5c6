// Package rules compiles the expressions of pipeline.toml once, at load,
// and evaluates them per event under a budget. It does no I/O.
//
// # Expressions
//
// Expressions are written in the expr language (https://expr-lang.org) and
// see the fields of [Env]: body, source, headers, id and received_at.
// Names outside Env fail at compile time, with the line and column inside
// the expression ([SyntaxError]), which package config turns into a
// file:line:column. The builtin now() is disabled so that a replay
// computes what the first run computed: use received_at instead.
//
// A source's accept rule and a route's when compile with [CompileBool]
// (a nil result, from a missing field, is false); a source's dedup_key and
// a route's transform with [CompileValue]. [Program.String] turns a value
// into a dedup key.
//
// # Routes
//
// A [Router] evaluates every route of an event: there is no first match
// (fan-out), and a sink gets one target, from the first matching route
// that names it, with that route's transform as its payload. Routes that
// share a when have it evaluated once per event. [NewRouter] compiles
// routes from their text; [NewRouterOf] takes programs compiled already
// (config compiles each once, into its plan). [Router.Matched] lists
// every route whose when is true, for `pipelined test`. A runtime error
// in a when is no match for that route; in a transform, it gives targets
// with Err set, so the event lands in those sinks' dead-letter queues.
//
// # Schemas
//
// [CompileSchema] compiles a source's JSON Schema from one self-contained
// file (references to other documents are refused), and [Schema.Validate]
// reports at most [MaxViolations] problems as "JSON-pointer: what is
// wrong". [Schema.Check] does the same, except for a body that could cost
// the JSON Schema library more than its budget (a nested body under
// nested alternatives, exponential in the library): that body is not
// checked, and Check returns [ErrTooComplex].
//
// # Budgets and speed
//
// Every evaluation runs on pooled VMs under a budget: [MaxOps] operations
// (closure turns, and len(y) for x in y), [MaxBytes] bytes of strings and
// arrays built (+, repeat, join, ...: charged before they are made) and
// expr's [MemoryBudget]; it stops when its context is done (the
// *Context methods). Going over is a [*BudgetError]. The budget is added
// by patching the syntax tree (budget.go), only of expressions that
// compile without it, so compile errors stay expr's own. An expression's
// syntax tree is bounded ([MaxNodes]) and a transform's JSON is cut off at
// [MaxPayload] while it is encoded. Runtime errors name no value of the
// event. Member access on decoded JSON
// takes a fast path for map[string]any (fetch.go) that changes speed only:
// its results and errors are expr's own.
package rules
