package sdk

import (
	"fmt"
	"os"
	"strings"
)

// Secret reads a secret config value the way every pipelined sink does: from
// the environment variable named by the key name+"_env", or from the file
// named by name+"_file" (a systemd credential, say; one trailing newline is
// dropped). Exactly one of envVar and file must be set. Errors name the keys
// and never contain the secret. The host passes a plugin only the
// environment variables its own config names in *_env keys.
func Secret(name, envVar, file string) (string, error) {
	switch {
	case envVar != "" && file != "":
		return "", fmt.Errorf("set only one of %s_env and %s_file", name, name)
	case envVar != "":
		v, ok := os.LookupEnv(envVar)
		if !ok || v == "" {
			return "", fmt.Errorf("%s_env: environment variable %s is not set (or empty) for the daemon", name, envVar)
		}
		return v, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s_file: %w", name, err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return "", fmt.Errorf("%s_file: %s is empty", name, file)
		}
		return v, nil
	}
	return "", fmt.Errorf("%s is required: set %s_env (an environment variable) or %s_file (a file); never write it inline", name, name, name)
}
