// Package e2e holds the end-to-end tests: the real pipelined binaries,
// built once by tests/harness, run on loopback with the real plugins, and
// are driven through their ingest, admin API, CLI, signals and systemd's
// notify protocol. The JetStream cluster tests (make test-jetstream) run
// only when asked for; under -short every test here is skipped.
package e2e
