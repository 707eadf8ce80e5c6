package sdk

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
	// "[]string", "map" (a table of strings) or "object" (any table).
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
