package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// env returns a lookup function over a fixed set of variables.
func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// acct is a valid accounts section, appended to configs that test
// something else.
const acct = "accounts:\n  - {user_name: u, api_key: k}\n"

// want is the Config that a file with only acct's account yields.
func want(mod func(*Config)) *Config {
	c := &Config{
		Listen:      "127.0.0.1:8080",
		AdminListen: "127.0.0.1:9090",
		Upstream:    Upstream{URL: "builtin:sim", Timeout: 10 * time.Second},
		Accounts:    []Account{{UserName: "u", APIKey: "k", Auth: "token"}},
		Cache:       Cache{TTL: 30 * time.Second, StaleTTL: 10 * time.Minute, NegativeTTL: 10 * time.Second, MaxEntries: 100000, MaxBytes: DefaultCacheMaxBytes},
		Limit:       Limit{UpstreamPerMinute: 50, MaxWait: 0, Window: 60 * time.Second, ClientPerMinute: 0, Reserve: 2, TokenGenerationsPerHour: 10},
		ClientAuth:  "required",
		Redis:       Redis{URL: "", Timeout: 50 * time.Millisecond, OnFailure: "deny"},
		Log:         Log{Format: "text", Level: "info", Access: true},

		UnknownPaths: "pass",
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestShippedConfig(t *testing.T) {
	t.Setenv("CLOUDAGENT_API_KEY", "") // restored after the test
	os.Unsetenv("CLOUDAGENT_API_KEY")
	data, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	demo := func(key string) *Config {
		return want(func(c *Config) { c.Accounts = []Account{{UserName: "demo", APIKey: key, Auth: "token"}} })
	}
	tests := []struct {
		name string
		load func() (*Config, error)
		want *Config
	}{
		{"Load, no env", func() (*Config, error) { return Load("../config.yaml") }, func() *Config {
			c := demo("demo-key")
			c.State.Dir = ".." // beside the file by default
			c.State.File = "config.yaml.state"
			return c
		}()},
		{"Parse, key set", func() (*Config, error) {
			return Parse(data, env(map[string]string{"CLOUDAGENT_API_KEY": "real-key"}))
		}, demo("real-key")},
		{"Parse, key empty", func() (*Config, error) {
			return Parse(data, env(map[string]string{"CLOUDAGENT_API_KEY": ""}))
		}, demo("demo-key")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.load()
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
			if a := got.Accounts[0]; a.APIKey != tt.want.Accounts[0].APIKey {
				t.Errorf("api_key mismatch") // DeepEqual above prints redacted keys
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want *Config
	}{
		{"only accounts", acct, want(nil)},
		{"empty sections", "upstream:\ncache: {}\nlimit:\nredis:\nlog:\n" + acct, want(nil)},
		{"nulls keep defaults", "listen: ~\nupstream: {url: null}\ncache: {ttl: }\n" + acct, want(nil)},
		{"auth defaults per account", "accounts:\n  - {user_name: a, api_key: k1, auth: apikey}\n  - {user_name: b, api_key: k2}\n",
			want(func(c *Config) {
				c.Accounts = []Account{{"a", "k1", "apikey"}, {"b", "k2", "token"}}
			})},
		{"everything set", `
listen: 0.0.0.0:80
admin_listen: "[::1]:9999"
upstream: {url: "https://in1-ccaas-api.ozonetel.com", timeout: 2s}
accounts: [{user_name: u, api_key: k, auth: apikey}]
cache: {ttl: 1m, stale_ttl: 0s, negative_ttl: 0, max_entries: 7, max_bytes: 1048576, refresh_ahead: true}
limit: {upstream_per_minute: 5, max_wait: 1.5s, window: 100ms, reserve: 4, client_per_minute: 20, token_generations_per_hour: 3}
client_auth: required
redis: {url: "redis://127.0.0.1:6379/0"}
log: {format: JSON, level: Debug, access: false}
unknown_paths: refuse
tls: {cert_file: /etc/caproxy/cert.pem, key_file: /etc/caproxy/key.pem}
`, &Config{
			Listen: "0.0.0.0:80", AdminListen: "[::1]:9999",
			Upstream: Upstream{URL: "https://in1-ccaas-api.ozonetel.com", Timeout: 2 * time.Second},
			Accounts: []Account{{"u", "k", "apikey"}},
			Cache:    Cache{TTL: time.Minute, StaleTTL: 0, NegativeTTL: 0, MaxEntries: 7, MaxBytes: 1 << 20, RefreshAhead: true},
			TLS:      TLS{CertFile: "/etc/caproxy/cert.pem", KeyFile: "/etc/caproxy/key.pem"},
			Limit: Limit{UpstreamPerMinute: 5, MaxWait: 1500 * time.Millisecond, Window: 100 * time.Millisecond,
				Reserve: 4, ClientPerMinute: 20, TokenGenerationsPerHour: 3},
			ClientAuth: "required",
			Redis:      Redis{URL: "redis://127.0.0.1:6379/0", Timeout: 50 * time.Millisecond, OnFailure: "deny"},
			Log:        Log{Format: "json", Level: "debug"},

			UnknownPaths: "refuse",
		}},
		{"redis cluster, share", "redis: {url: 'rediss://u:p@', addrs: ['a:1', 'b:2'], timeout: 20ms, on_failure: share, replicas: 3}\n" + acct,
			want(func(c *Config) {
				c.Redis = Redis{URL: "rediss://u:p@", Addrs: []string{"a:1", "b:2"}, Timeout: 20 * time.Millisecond, OnFailure: "share", Replicas: 3}
			})},
		{"redis sentinel without url", "redis: {addrs: ['a:1'], master_name: mymaster}\n" + acct,
			want(func(c *Config) {
				c.Redis = Redis{Addrs: []string{"a:1"}, MasterName: "mymaster", Timeout: 50 * time.Millisecond, OnFailure: "deny"}
			})},
		{"client_auth off on loopback", "client_auth: off\nlisten: localhost:1\n" + acct,
			want(func(c *Config) { c.ClientAuth = "off"; c.Listen = "localhost:1" })},
		{"client_auth off on ::1", "client_auth: off\nlisten: '[::1]:1'\n" + acct,
			want(func(c *Config) { c.ClientAuth = "off"; c.Listen = "[::1]:1" })},
		{"anchors and aliases", "cache: {ttl: &t 5s, negative_ttl: *t}\n" + acct,
			want(func(c *Config) { c.Cache.TTL = 5 * time.Second; c.Cache.NegativeTTL = 5 * time.Second })},
		{"port 0 for both listeners", "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n" + acct,
			want(func(c *Config) { c.Listen = "127.0.0.1:0"; c.AdminListen = "127.0.0.1:0" })},
		{"above CloudAgent's limits with the override", "limit: {upstream_per_minute: 100, token_generations_per_hour: 20, above_cloudagent_limits: true}\n" + acct,
			want(func(c *Config) {
				c.Limit.UpstreamPerMinute, c.Limit.TokenGenerationsPerHour, c.Limit.AboveCloudAgentLimits = 100, 20, true
			})},
		{"admin off loopback with a token", "admin_listen: 0.0.0.0:9090\nadmin_token: ${ADMIN_TOKEN:-0123456789abcdef}\n" + acct,
			want(func(c *Config) { c.AdminListen = "0.0.0.0:9090"; c.AdminToken = "0123456789abcdef" })},
		{"numeric api_key", "accounts: [{user_name: u, api_key: 12345}]\n",
			want(func(c *Config) { c.Accounts[0].APIKey = "12345" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml), nil)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "EMPTY": "", "B_2": "beta"}
	tests := []struct{ in, want string }{
		{"x: ${A}", "alpha"},
		{"x: ${A:-d}", "alpha"},
		{"x: ${UNSET:-d}", "d"},
		{"x: ${EMPTY:-d}", "d"}, // shell: ":-" also covers set-but-empty
		{"x: ${EMPTY}", ""},
		{"x: ${UNSET:-}", ""},
		{"x: ${UNSET:-with spaces/and:colons}", "with spaces/and:colons"},
		{"x: ${A}${B_2}-${A}", "alphabeta-alpha"},
		{"x: $$", "$"},
		{"x: $${A}", "${A}"},
		{"x: $$$${A}", "$${A}"},
		{"x: $$${A}", "$alpha"},
		{"x: $A $ a$", "$A $ a$"},
		{"x: '${A} #1'", "alpha #1"},
		{"x: [${A}, b]", "alpha"},
		{"x: {k: ${A}}", "alpha"},
		{"# ${A} and ${UNSET} in a comment\nx: 1", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := expandedX(t, tt.in, env(vars)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// expandedX parses in, substitutes its references and returns the value of
// the top-level key x (of a list, its first item; of a mapping, its first
// value).
func expandedX(t *testing.T, in string, lookupEnv func(string) (string, bool)) string {
	t.Helper()
	e := expand([]byte(in), lookupEnv)
	if len(e.problems) > 0 {
		t.Fatalf("problems: %v", e.problems)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(e.text, &doc); err != nil {
		t.Fatal(err)
	}
	if ps := e.substitute(&doc, map[*yaml.Node]bool{}); len(ps) > 0 {
		t.Fatalf("problems: %v", ps)
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "x" {
			n := root.Content[i+1]
			for n.Kind != yaml.ScalarNode { // a list's first item, a mapping's first value
				if n.Kind == yaml.MappingNode {
					n = n.Content[1]
				} else {
					n = n.Content[0]
				}
			}
			return n.Value
		}
	}
	t.Fatalf("no key x in %q", in)
	return ""
}

// TestEnvValuesAreNeverYAML checks that a value from the environment is
// taken whole, as the value of the key that references it: it can neither
// be cut short by YAML syntax in it nor add keys to the file.
func TestEnvValuesAreNeverYAML(t *testing.T) {
	vars := env(map[string]string{
		"KEY":      "abc #x",
		"INJECT":   "a\nclient_auth: off",
		"QUOTE":    "'q\"",
		"NUM":      "7",
		"ANCHORED": "*alias",
	})
	cfg, err := Parse([]byte(`listen: 127.0.0.1:8080
accounts:
  - user_name: u
    api_key: ${KEY}
  - user_name: v
    api_key: ${INJECT}
  - user_name: w
    api_key: "${QUOTE}"
  - user_name: x
    api_key: ${ANCHORED}
cache:
  max_entries: ${NUM}
  ttl: ${UNSET_TTL:-}
`), vars)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Accounts[0].APIKey; got != "abc #x" {
		t.Errorf("api_key = %q, want %q", got, "abc #x")
	}
	if got := cfg.Accounts[1].APIKey; got != "a\nclient_auth: off" {
		t.Errorf("api_key = %q, want the whole value", got)
	}
	if cfg.ClientAuth != ClientAuthRequired {
		t.Errorf("client_auth = %q: a value from the environment added a key", cfg.ClientAuth)
	}
	if got := cfg.Accounts[2].APIKey; got != "'q\"" {
		t.Errorf("api_key = %q", got)
	}
	if got := cfg.Accounts[3].APIKey; got != "*alias" {
		t.Errorf("api_key = %q", got)
	}
	if cfg.Cache.MaxEntries != 7 {
		t.Errorf("max_entries = %d, want 7", cfg.Cache.MaxEntries)
	}
	if cfg.Cache.TTL != defaults().Cache.TTL {
		t.Errorf("ttl = %v: an empty plain value must keep the default", cfg.Cache.TTL)
	}
}

func TestEnvInConfig(t *testing.T) {
	vars := env(map[string]string{
		"KEY": "s3cr3t", "PORT": "8181", "TTL": "45s", "ROLE": "apikey",
	})
	got, err := Parse([]byte(`listen: 127.0.0.1:${PORT}
accounts:
  - user_name: ${USER:-svc}
    api_key: ${KEY}
    auth: ${ROLE}
cache:
  ttl: ${TTL}
  stale_ttl: ${STALE:-1m}
`), vars)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg := want(func(c *Config) {
		c.Listen = "127.0.0.1:8181"
		c.Accounts = []Account{{"svc", "s3cr3t", "apikey"}}
		c.Cache.TTL = 45 * time.Second
		c.Cache.StaleTTL = time.Minute
	})
	if !reflect.DeepEqual(got, wantCfg) || got.Accounts[0].APIKey != "s3cr3t" {
		t.Errorf("got %#v", got)
	}
}

func TestEnvErrors(t *testing.T) {
	secret := "hunter2-secret"
	vars := env(map[string]string{"SET": secret})
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error
	}{
		{"missing", "listen: ${SET}\naccounts: [{user_name: u, api_key: ${CLOUDAGENT_API_KEY}}]\n",
			[]string{"config.yaml:2:", "CLOUDAGENT_API_KEY", "not set"}},
		{"all missing reported", "a: ${ONE}\nb: ${TWO}\n",
			[]string{"config.yaml:1: environment variable ONE", "config.yaml:2: environment variable TWO"}},
		{"bad name", "x: ${1BAD}\n", []string{"config.yaml:1:", `"${1BAD}"`}},
		{"empty name", "x: ${}\n", []string{"config.yaml:1:", "bad environment reference"}},
		{"unsupported form", "x: ${SET-d}\n", []string{"config.yaml:1:", "${SET-d}"}},
		{"unterminated", "ok: 1\nx: ${SET\n", []string{"config.yaml:2:", "unterminated"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), vars)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks a value: %q", err)
			}
		})
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"listen not host:port", "listen: 8080\n" + acct, []string{"config.yaml:1:", "listen", `"8080"`}},
		{"listen bad port", "listen: 'localhost:http'\n" + acct, []string{"config.yaml:1:", "listen"}},
		{"listen port range", "listen: 'localhost:70000'\n" + acct, []string{"config.yaml:1:", "listen"}},
		{"admin_listen", "admin_listen: nowhere\n" + acct, []string{"config.yaml:1:", "admin_listen"}},
		{"admin_listen same as listen", "listen: 127.0.0.1:1\nadmin_listen: 127.0.0.1:1\n" + acct, []string{"config.yaml:2:", "admin_listen must differ"}},
		{"upstream url scheme", "upstream: {url: ftp://x}\n" + acct, []string{"config.yaml:1:", "upstream.url", `"ftp://x"`}},
		{"upstream url relative", "upstream: {url: /ca_apis}\n" + acct, []string{"upstream.url"}},
		{"upstream url no host", "upstream: {url: 'https://'}\n" + acct, []string{"upstream.url", "no host"}},
		{"upstream url query", "upstream: {url: 'https://h/?a=1'}\n" + acct, []string{"upstream.url", "query"}},
		{"upstream url fragment", "upstream: {url: 'https://h/#f'}\n" + acct, []string{"upstream.url", "fragment"}},
		{"upstream url builtin", "upstream: {url: 'builtin:other'}\n" + acct, []string{"upstream.url", "builtin:sim"}},
		{"upstream url userinfo", "upstream: {url: 'https://me:pw-value@h'}\n" + acct, []string{"upstream.url", "password"}},
		{"upstream timeout zero", "upstream:\n  timeout: 0s\n" + acct, []string{"config.yaml:2:", "upstream.timeout"}},
		{"upstream timeout negative", "upstream:\n  timeout: -1s\n" + acct, []string{"config.yaml:2:", "upstream.timeout", "-1s"}},
		{"upstream max_answer tiny", "upstream:\n  max_answer: 10\n" + acct, []string{"config.yaml:2:", "upstream.max_answer", "1024"}},
		{"no accounts key", "listen: 127.0.0.1:1\n", []string{"config.yaml: accounts", "at least one"}},
		{"empty accounts", "accounts: []\n", []string{"config.yaml:1:", "accounts", "at least one"}},
		{"empty file", "", []string{"accounts", "at least one"}},
		{"only comments", "# nothing\n", []string{"accounts", "at least one"}},
		{"user_name empty", "accounts:\n  - api_key: k\n", []string{"config.yaml:2:", "accounts[0].user_name"}},
		{"api_key empty", "accounts:\n  - user_name: u\n    api_key: ''\n", []string{"config.yaml:3:", "accounts[0].api_key"}},
		{"api_key missing", "accounts:\n  - user_name: u\n", []string{"config.yaml:2:", "accounts[0].api_key"}},
		{"duplicate user_name", "accounts:\n  - {user_name: u, api_key: k}\n  - {user_name: u, api_key: k2}\n",
			[]string{"config.yaml:3:", "accounts[1].user_name", `"u"`, "accounts[0]"}},
		{"auth", "accounts:\n  - {user_name: u, api_key: k, auth: basic}\n", []string{"config.yaml:2:", "accounts[0].auth", `"basic"`}},
		{"auth empty", "accounts:\n  - {user_name: u, api_key: k, auth: ''}\n", []string{"accounts[0].auth"}},
		{"ttl zero", "cache: {ttl: 0s}\n" + acct, []string{"config.yaml:1:", "cache.ttl"}},
		{"stale_ttl negative", "cache: {stale_ttl: -1m}\n" + acct, []string{"cache.stale_ttl"}},
		{"negative_ttl negative", "cache: {negative_ttl: -1s}\n" + acct, []string{"cache.negative_ttl"}},
		{"max_entries zero", "cache: {max_entries: 0}\n" + acct, []string{"cache.max_entries"}},
		{"max_bytes zero", "cache: {max_bytes: 0}\n" + acct, []string{"config.yaml:1:", "cache.max_bytes"}},
		{"tls cert_file alone", "tls:\n  cert_file: c.pem\n" + acct, []string{"config.yaml:1:", "tls.cert_file and tls.key_file must be set together"}},
		{"tls key_file alone", "tls: {key_file: k.pem}\n" + acct, []string{"config.yaml:1:", "tls.cert_file and tls.key_file must be set together"}},
		{"upstream_per_minute zero", "limit: {upstream_per_minute: 0}\n" + acct, []string{"limit.upstream_per_minute"}},
		{"max_wait negative", "limit: {max_wait: -1s}\n" + acct, []string{"limit.max_wait"}},
		{"window zero", "limit: {window: 0s}\n" + acct, []string{"limit.window"}},
		{"reserve negative", "limit: {reserve: -1}\n" + acct, []string{"config.yaml:1:", "limit.reserve"}},
		{"reserve the whole budget", "limit: {upstream_per_minute: 5, reserve: 5}\n" + acct, []string{"limit.reserve", "less than"}},
		{"client_per_minute negative", "limit: {client_per_minute: -1}\n" + acct, []string{"limit.client_per_minute"}},
		{"token_generations_per_hour zero", "limit: {token_generations_per_hour: 0}\n" + acct, []string{"limit.token_generations_per_hour"}},
		{"client_auth value", "client_auth: maybe\n" + acct, []string{"config.yaml:1:", "client_auth", `"maybe"`}},
		{"upstream_per_minute above CloudAgent's", "limit: {upstream_per_minute: 51}\n" + acct,
			[]string{"config.yaml:1:", "limit.upstream_per_minute 51 is above", "above_cloudagent_limits"}},
		{"token_generations_per_hour above CloudAgent's", "limit: {token_generations_per_hour: 11}\n" + acct,
			[]string{"config.yaml:1:", "limit.token_generations_per_hour 11 is above", "above_cloudagent_limits"}},
		{"admin off loopback without a token", "admin_listen: 0.0.0.0:9090\n" + acct, []string{"config.yaml:1:", "admin_token is required"}},
		{"admin token too short", "admin_token: short\n" + acct, []string{"config.yaml:1:", "admin_token must be at least 16"}},
		{"client_auth off, all interfaces", "listen: 0.0.0.0:8080\nclient_auth: off\n" + acct, []string{"config.yaml:2:", "client_auth", "loopback"}},
		{"client_auth off, empty host", "listen: :8080\nclient_auth: off\n" + acct, []string{"client_auth", "loopback"}},
		{"client_auth off, public host", "listen: 10.0.0.1:8080\nclient_auth: off\n" + acct, []string{"client_auth", "loopback"}},
		{"client_auth off, default ok but boolean", "client_auth: false\n" + acct, []string{"client_auth", `"false"`}},
		{"redis scheme", "redis: {url: 'http://h:6379'}\n" + acct, []string{"config.yaml:1:", "redis.url"}},
		{"redis no host", "redis: {url: 'redis://'}\n" + acct, []string{"redis.url", "no host"}},
		{"redis on_failure value", "redis: {url: 'redis://h:1', on_failure: maybe}\n" + acct, []string{"redis.on_failure", `"maybe"`}},
		{"redis share without replicas", "redis: {url: 'redis://h:1', on_failure: share}\n" + acct, []string{"redis.on_failure", "redis.replicas"}},
		{"redis replicas negative", "redis: {url: 'redis://h:1', replicas: -1}\n" + acct, []string{"redis.replicas"}},
		{"redis timeout zero", "redis: {url: 'redis://h:1', timeout: 0s}\n" + acct, []string{"redis.timeout"}},
		{"redis master_name without addrs", "redis: {url: 'redis://h:1', master_name: m}\n" + acct, []string{"redis.master_name", "redis.addrs"}},
		{"redis addrs not host:port", "redis: {addrs: [h]}\n" + acct, []string{"redis.addrs[0]"}},
		{"log format", "log: {format: xml}\n" + acct, []string{"log.format", `"xml"`}},
		{"log level", "log: {level: trace}\n" + acct, []string{"log.level", `"trace"`}},
		{"log access", "log: {access: sometimes}\n" + acct, []string{"log.access", "true or false"}},
		// Decoding problems.
		{"unknown top-level key", "listen: 127.0.0.1:1\nlisen: x\n" + acct, []string{`config.yaml:2: unknown key "lisen" at top level (did you mean "listen"?)`}},
		{"unknown nested key", "cache:\n  ttl: 1s\n  ttll: 5s\n" + acct, []string{`config.yaml:3: unknown key "ttll" in cache (did you mean "ttl"?)`}},
		{"unknown account key", "accounts:\n  - user_name: u\n    api_key: k\n    apikey: k\n", []string{`config.yaml:4: unknown key "apikey" in accounts[0]`}},
		{"unknown key via alias", "x: &t 5s\n" + acct, []string{`config.yaml:1: unknown key "x" at top level`}},
		{"duplicate key", "cache:\n  ttl: 1s\n  ttl: 2s\n" + acct, []string{`config.yaml:3: duplicate key "ttl" in cache (first at line 2)`}},
		{"bad duration", "cache:\n  ttl: 30\n" + acct, []string{`config.yaml:2: cache.ttl: invalid duration "30"`}},
		{"bad duration word", "limit:\n  max_wait: soon\n" + acct, []string{"config.yaml:2:", "limit.max_wait", "invalid duration"}},
		{"duration as list", "upstream:\n  timeout: [1s]\n" + acct, []string{"config.yaml:2:", "upstream.timeout", "a list"}},
		{"bad integer", "cache:\n  max_entries: lots\n" + acct, []string{"config.yaml:2:", "cache.max_entries", "whole number"}},
		{"string as mapping", "listen: {a: b}\n" + acct, []string{"config.yaml:1:", "listen", "a mapping"}},
		{"section as scalar", "cache: big\n" + acct, []string{"config.yaml:1:", "cache", "mapping"}},
		{"accounts as mapping", "accounts: {user_name: u}\n", []string{"config.yaml:1:", "accounts", "list"}},
		{"top level list", "- a\n- b\n", []string{"config.yaml:1: the top level: expected a mapping"}},
		{"both listeners bad", "listen: x\nadmin_listen: x\n" + acct, []string{"config.yaml:1: listen", "config.yaml:2: admin_listen"}},
		{"yaml syntax", "listen: 127.0.0.1:1\ncache:\n  ttl: 1s\n bad: [\n", []string{"config.yaml:", "invalid YAML"}},
		{"two documents", acct + "---\nlisten: x\n", []string{"config.yaml:3:", "one YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml), nil)
			if err == nil {
				t.Fatalf("no error; got %+v", cfg)
			}
			if cfg != nil {
				t.Error("config returned with an error")
			}
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %T is not a *config.Error with problems", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "pw-value") {
				t.Errorf("error leaks a password: %q", err)
			}
			for _, p := range ce.Problems {
				if strings.Contains(p, "\n") || !strings.HasPrefix(p, "config.yaml:") {
					t.Errorf("problem %q is not one line starting with the file name", p)
				}
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	_, err := Parse([]byte(`listen: nope
cache:
  ttl: 0s
  max_entries: 0
limit:
  upstream_per_minute: -1
  bogus: 1
accounts:
  - user_name: u
log:
  level: loud
`), nil)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
	wantLines := []string{
		"config.yaml:1: listen",
		"config.yaml:3: cache.ttl",
		"config.yaml:4: cache.max_entries",
		"config.yaml:6: limit.upstream_per_minute",
		`config.yaml:7: unknown key "bogus" in limit`,
		"config.yaml:9: accounts[0].api_key",
		"config.yaml:11: log.level",
	}
	if len(ce.Problems) != len(wantLines) {
		t.Fatalf("got %d problems, want %d:\n%s", len(ce.Problems), len(wantLines), err)
	}
	for i, w := range wantLines {
		if !strings.HasPrefix(ce.Problems[i], w) {
			t.Errorf("problem %d = %q, want prefix %q", i, ce.Problems[i], w)
		}
	}
	if got := err.Error(); got != strings.Join(ce.Problems, "\n") {
		t.Errorf("Error() = %q", got)
	}
}

func TestLineNumbersAfterMultilineValue(t *testing.T) {
	// A value with a newline must not shift the reported lines.
	_, err := Parse([]byte("listen: \"${TWO_LINES}\"\nadmin_listen: 127.0.0.1:9090\ncache: {ttl: 0s}\n"+acct),
		env(map[string]string{"TWO_LINES": "127.0.0.1:1\n"}))
	if err == nil || !strings.Contains(err.Error(), "config.yaml:3: cache.ttl") {
		t.Errorf("got %v", err)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	const secret = "Zx9-secret-Qw7"
	vars := env(map[string]string{"SECRET": secret, "STAR": "*" + secret, "NL": secret + "\n  - x"})
	tests := []struct{ name, yaml string }{
		{"api_key with other problems", "listen: bad\naccounts: [{user_name: u, api_key: ${SECRET}, auth: nope}]\n"},
		{"api_key duplicate account", "accounts:\n  - {user_name: u, api_key: ${SECRET}}\n  - {user_name: u, api_key: ${SECRET}}\n"},
		{"literal api_key with problems", "accounts:\n  - {user_name: u, api_key: " + secret + ", auth: x}\n  - {user_name: u, api_key: " + secret + "}\n"},
		{"secret as listen", "listen: ${SECRET}\n" + acct},
		{"secret as user_name duplicate", "accounts:\n  - {user_name: '${SECRET}', api_key: k}\n  - {user_name: '${SECRET}', api_key: k}\n"},
		{"secret as duration", "cache: {ttl: ${SECRET}}\n" + acct},
		{"secret as integer", "cache: {max_entries: ${SECRET}}\n" + acct},
		{"secret as auth", "accounts: [{user_name: u, api_key: k, auth: ${SECRET}}]\n"},
		{"secret as client_auth", "client_auth: ${SECRET}\n" + acct},
		{"secret as log level", "log: {level: ${SECRET}, format: ${SECRET}}\n" + acct},
		{"secret as upstream url", "upstream: {url: ${SECRET}}\n" + acct},
		{"secret in upstream url", "upstream: {url: 'https://u:${SECRET}@h'}\n" + acct},
		{"secret in redis url", "redis: {url: 'redis://:" + secret + "@'}\n" + acct},
		{"secret in bad redis url", "redis: {url: 'http://:" + secret + "@h'}\n" + acct},
		{"secret as key", "${SECRET}: 1\n" + acct},
		{"secret breaks yaml", "listen: ${STAR}\n" + acct},
		{"secret with newline", "accounts:\n  - user_name: ${NL}\n"},
		{"client_auth off with secret listen", "listen: 10.0.0.1:${SECRET}\nclient_auth: off\n" + acct},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), vars)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "Zx9") {
				t.Errorf("error leaks the secret: %q", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "caproxy.yaml")
	if err := os.WriteFile(path, []byte("cache: {ttl: 0s}\n"+acct), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":1: cache.ttl") {
		t.Errorf("Load bad file: %v", err)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load missing file: %v", err)
	}
	t.Setenv("CAPROXY_TEST_KEY", "from-env")
	if err := os.WriteFile(path, []byte("accounts: [{user_name: u, api_key: '${CAPROXY_TEST_KEY}'}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil || cfg.Accounts[0].APIKey != "from-env" {
		t.Errorf("Load with env: %v", err)
	}
}

func TestAccountLookup(t *testing.T) {
	cfg, err := Parse([]byte("accounts:\n  - {user_name: a, api_key: k1}\n  - {user_name: b, api_key: k2, auth: apikey}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		want   Account
		wantOK bool
	}{
		{"a", Account{"a", "k1", "token"}, true},
		{"b", Account{"b", "k2", "apikey"}, true},
		{"A", Account{}, false},
		{"", Account{}, false},
	}
	for _, tt := range tests {
		got, ok := cfg.Account(tt.name)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("Account(%q) = %v, %v", tt.name, got, ok)
		}
	}
}

func TestPrintingNeverShowsSecrets(t *testing.T) {
	const key = "K3y-very-secret"
	const pw = "Pw-very-secret"
	const adminToken = "Adm1n-very-secret-token"
	cfg, err := Parse([]byte("accounts: [{user_name: demo, api_key: ${KEY}}]\nredis: {url: 'redis://user:${PW}@r:6379/0'}\nadmin_token: ${ADMIN}\n"),
		env(map[string]string{"KEY": key, "PW": pw, "ADMIN": adminToken}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AdminToken != adminToken {
		t.Fatalf("admin_token not loaded")
	}
	a := cfg.Accounts[0]
	var outputs = map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		outputs["account "+verb] = fmt.Sprintf(verb, a)
		outputs["*account "+verb] = fmt.Sprintf(verb, &a)
		outputs["config "+verb] = fmt.Sprintf(verb, *cfg)
		outputs["*config "+verb] = fmt.Sprintf(verb, cfg)
		outputs["redis "+verb] = fmt.Sprintf(verb, cfg.Redis)
	}
	outputs["Sprint"] = fmt.Sprint(a, cfg)
	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	} {
		var buf bytes.Buffer
		l := slog.New(h.new(&buf))
		l.Info("x", "account", a, "config", cfg, "accounts", cfg.Accounts, "redis", cfg.Redis)
		outputs["slog "+h.name] = buf.String()
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["yaml"] = string(y)

	for name, out := range outputs {
		if strings.Contains(out, key) || strings.Contains(out, pw) || strings.Contains(out, adminToken) {
			t.Errorf("%s leaks a secret: %s", name, out)
		}
		if strings.Contains(name, "redis") || strings.Contains(name, "Sprint") {
			continue
		}
		if !strings.Contains(out, "demo") {
			t.Errorf("%s does not show the account: %s", name, out)
		}
	}
	if got := fmt.Sprint(a); got != "{UserName:demo APIKey:[REDACTED] Auth:token}" {
		t.Errorf("String() = %q", got)
	}
	if got := fmt.Sprintf("%#v", a); got != `config.Account{UserName:"demo", APIKey:"[REDACTED]", Auth:"token"}` {
		t.Errorf("GoString() = %q", got)
	}
	if got := fmt.Sprint(Account{UserName: "x"}); got != "{UserName:x APIKey: Auth:}" {
		t.Errorf("empty key shown as %q", got)
	}
	if a.APIKey != key || cfg.Redis.URL != "redis://user:"+pw+"@r:6379/0" {
		t.Error("redaction changed the stored values")
	}
}

func TestSlogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError, "": slog.LevelInfo,
	} {
		if got := (Log{Level: in}).SlogLevel(); got != want {
			t.Errorf("SlogLevel(%q) = %v, want %v", in, got, want)
		}
	}
}
