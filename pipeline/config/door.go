package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/pipelined/pipelined/pipeline/auth"
)

// checkTLSFiles checks that the ingest listener's certificate and key
// files exist.
func (c *Config) checkTLSFiles(p *problems) {
	srv := c.Server
	for _, f := range []struct{ key, path string }{{"tls_cert_file", srv.TLSCertFile}, {"tls_key_file", srv.TLSKeyFile}} {
		c.checkFile(p, "server", f.key, f.path)
	}
}

// checkFile reports, as a problem of table.key, a file that serve would
// not find: a ${VAR} of its name that is not set, or no such file.
func (c *Config) checkFile(p *problems, table, key, path string) {
	if path == "" {
		return
	}
	name, err := ExpandFile(path)
	if err != nil {
		p.at(table, -1, key, "%s.%s %v", table, key, err)
		return
	}
	if _, err := os.Stat(name); err != nil {
		p.at(table, -1, key, "%s.%s: %v", table, key, c.fileErr(err))
	}
}

// AdminToken returns the admin API's bearer token, nil when none is set.
func (c *Config) AdminToken() ([]byte, error) {
	a := c.Admin
	switch {
	case a.TokenEnv != "" && a.TokenFile != "":
		return nil, errors.New("admin: set only one of token_env and token_file")
	case a.TokenEnv != "":
		v, ok := os.LookupEnv(a.TokenEnv)
		if !ok || v == "" {
			return nil, fmt.Errorf("admin.token_env: environment variable %s is not set (or empty)", a.TokenEnv)
		}
		return []byte(v), nil
	case a.TokenFile != "":
		name, err := ExpandFile(a.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin.token_file %w", err)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("admin.token_file: %w", c.fileErr(err))
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return nil, fmt.Errorf("admin.token_file: %s is empty", a.TokenFile)
		}
		return []byte(v), nil
	}
	return nil, nil
}

// AdminOnLoopback reports whether the admin listener accepts connections
// from this machine only.
func (c *Config) AdminOnLoopback() bool {
	return OnLoopback(c.Admin.Listen)
}

// OnLoopback reports whether the listen address hostport ("127.0.0.1:8081",
// "localhost:8081", "[::1]:8081") takes connections from this machine only.
func OnLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// AuthSpec returns the i-th source's authentication with its secrets read
// from their environment variables and files. Errors name the variable or
// file, never a secret.
func (c *Config) AuthSpec(i int) (auth.Spec, error) {
	a := c.Sources[i].Auth
	spec := auth.Spec{
		Type:      a.Type,
		Preset:    a.Preset,
		Header:    a.Header,
		Algorithm: a.Algorithm,
		Encoding:  a.Encoding,
		Prefix:    a.Prefix,
		Param:     a.Param,
		Tolerance: a.Tolerance.Duration,
	}
	var errs []error
	for _, name := range a.SecretEnv {
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			errs = append(errs, fmt.Errorf("secret_env: environment variable %s is not set (or empty)", name))
			continue
		}
		spec.Secrets = append(spec.Secrets, []byte(v))
	}
	for _, f := range a.SecretFile {
		name, err := ExpandFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("secret_file %w", err))
			continue
		}
		b, err := os.ReadFile(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("secret_file: %w", c.fileErr(err)))
			continue
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			errs = append(errs, fmt.Errorf("secret_file: %s is empty", f))
			continue
		}
		spec.Secrets = append(spec.Secrets, []byte(v))
	}
	return spec, errors.Join(errs...)
}

// ParsePrefixes parses addresses and CIDRs ("10.0.0.0/8", "192.0.2.7",
// "2001:db8::/32"); a bare address is a prefix of its full length.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q is not an address or CIDR (write e.g. \"192.0.2.0/24\")", s))
			continue
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, errors.Join(errs...)
}
