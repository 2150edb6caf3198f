// Package config loads caproxy's config.yaml: it expands ${VAR} references
// from the environment, decodes the YAML strictly (an unknown key is an
// error), fills in defaults and validates the result, reporting every problem
// with its file and line. It is the one place that knows the operator
// contract for configuration keys.
//
// Secrets (an account's api_key, a password in redis.url) never appear in an
// error message or in any printed or logged form of a Config.
package config

import (
	"cmp"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Values with a meaning of their own in config.yaml.
const (
	// UpstreamSim is the upstream.url that runs CloudAgent's simulator
	// in-process instead of calling a real CloudAgent.
	UpstreamSim = "builtin:sim"

	// AuthToken is the account auth mode in which the proxy generates an
	// upstream token and sends "Authorization: Bearer <token>".
	AuthToken = "token"
	// AuthAPIKey is the account auth mode in which the proxy sends the
	// "apiKey" header on every upstream call.
	AuthAPIKey = "apikey"

	// ClientAuthRequired makes clients prove they may use an account.
	ClientAuthRequired = "required"
	// ClientAuthOff trusts every client; allowed only on a loopback listen.
	ClientAuthOff = "off"

	// RedisDeny answers misses 503 while Redis is unreachable: no upstream
	// call without the shared budget.
	RedisDeny = "deny"
	// RedisShare lets each replica spend its share of the budget alone
	// while Redis is unreachable.
	RedisShare = "share"

	// UnknownPass passes a path outside the route table through.
	UnknownPass = "pass"
	// UnknownRefuse answers a path outside the route table 404.
	UnknownRefuse = "refuse"
)

// redacted replaces a secret wherever a configuration value is printed.
const redacted = "[REDACTED]"

// Secret is a configured secret: printing it (fmt, slog, JSON, YAML) shows
// only whether it is set.
type Secret string

func (s Secret) shown() string {
	if s == "" {
		return ""
	}
	return redacted
}

// String hides the secret.
func (s Secret) String() string { return s.shown() }

// GoString hides the secret from %#v.
func (s Secret) GoString() string { return strconv.Quote(s.shown()) }

// LogValue hides the secret from slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.shown()) }

// MarshalJSON hides the secret.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.shown()) }

// MarshalYAML hides the secret.
func (s Secret) MarshalYAML() (any, error) { return s.shown(), nil }

// Config is a loaded, defaulted and validated config.yaml.
type Config struct {
	// Listen is the proxy's host:port (default 127.0.0.1:8080).
	Listen string `yaml:"listen"`
	// AdminListen is the host:port of /metrics, /healthz and /readyz
	// (default 127.0.0.1:9090).
	AdminListen string `yaml:"admin_listen"`
	// AdminToken, when set, is the bearer token the admin listener asks
	// for on everything but /healthz and /readyz. Required when
	// AdminListen is not a loopback address; take it from the environment
	// (admin_token: ${CAPROXY_ADMIN_TOKEN}).
	AdminToken Secret `yaml:"admin_token"`
	// Upstream is the CloudAgent the proxy fronts.
	Upstream Upstream `yaml:"upstream"`
	// Accounts are the CloudAgent accounts served; at least one.
	Accounts []Account `yaml:"accounts"`
	// Cache tunes the AHT answer cache.
	Cache Cache `yaml:"cache"`
	// Limit sets the upstream budget and the optional inbound limits.
	Limit Limit `yaml:"limit"`
	// ClientAuth is ClientAuthRequired (default) or ClientAuthOff.
	ClientAuth string `yaml:"client_auth"`
	// Redis shares state between replicas; empty URL keeps it in memory.
	Redis Redis `yaml:"redis"`
	// State keeps a single node's tokens and budget logs across restarts.
	State State `yaml:"state"`
	// Log selects the log format and level.
	Log Log `yaml:"log"`
	// Routes add routes to caproxy's built-in route table, or replace a
	// built-in route of the same name (see the README's route table).
	// Read at start only.
	Routes []Route `yaml:"routes"`
	// UnknownPaths is what happens to a path outside the route table:
	// UnknownPass (default: passed through with the account's
	// credentials) or UnknownRefuse (404).
	UnknownPaths string `yaml:"unknown_paths"`
	// TLS serves Listen over HTTPS when set (default: plain HTTP).
	TLS TLS `yaml:"tls"`
}

// TLS is the certificate the client listener serves HTTPS with. Both files
// are set, or neither (plain HTTP). The files are read at start and again on
// every SIGHUP; package main loads and checks them.
type TLS struct {
	// CertFile is a PEM file: the certificate, then any intermediates.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile's certificate.
	KeyFile string `yaml:"key_file"`
}

// Enabled reports whether the client listener serves HTTPS.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Route is one entry of routes: the policy of one CloudAgent path.
type Route struct {
	// Name labels the route in metrics and logs; a built-in route of the
	// same name is replaced. a-z, 0-9 and _, starting with a letter.
	Name string `yaml:"name"`
	// Path is the canonical path, or a prefix ending in "/*".
	Path string `yaml:"path"`
	// Methods are the HTTP methods allowed (empty: any).
	Methods []string `yaml:"methods"`
	// Auth is the upstream auth style: "apikey", "token", "query" (api_key
	// and username in the query string, the legacy CAServices API) or
	// "account" (default: the account's own mode).
	Auth string `yaml:"auth"`
	// Budget is how many upstream calls an account may make on the route
	// in any trailing Window (default 0: no budget).
	Budget int `yaml:"budget"`
	// Window is Budget's trailing window (default 60s).
	Window time.Duration `yaml:"window"`
	// CacheTTL caches successful answers of reads that long (default 0:
	// not cached).
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// StaleTTL is how long after CacheTTL an answer may be served stale
	// (default 10m).
	StaleTTL time.Duration `yaml:"stale_ttl"`
	// Write marks calls that change something: never cached or retried.
	Write bool `yaml:"write"`
	// ErrorStatus is the "status" of the route's error bodies: "error"
	// (default) or "false".
	ErrorStatus string `yaml:"error_status"`
}

// Upstream is the CloudAgent the proxy calls.
type Upstream struct {
	// URL is UpstreamSim (default) or an absolute http/https base URL such
	// as https://in1-ccaas-api.ozonetel.com.
	URL string `yaml:"url"`
	// Timeout bounds one upstream call (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxAnswer caps, in bytes, an upstream answer caproxy reads whole
	// (AHT and cached routes; default 64 MiB, room for a busy day of
	// CDRs; 0 also means the default). A larger answer is refused with 502,
	// never cut.
	MaxAnswer int `yaml:"max_answer"`
}

// Account is one CloudAgent account. Its APIKey is a secret: String,
// GoString, LogValue, MarshalJSON and MarshalYAML all redact it.
type Account struct {
	// UserName is the CloudAgent userName.
	UserName string `yaml:"user_name"`
	// APIKey is the account's CloudAgent apiKey.
	APIKey string `yaml:"api_key"`
	// Auth is AuthToken (default) or AuthAPIKey, matching the account's
	// setting in CloudAgent.
	Auth string `yaml:"auth"`
}

// Cache tunes the AHT answer cache.
type Cache struct {
	// TTL is how long an answer is fresh (default 30s).
	TTL time.Duration `yaml:"ttl"`
	// StaleTTL is how long after TTL an answer may still be served stale
	// (default 10m).
	StaleTTL time.Duration `yaml:"stale_ttl"`
	// NegativeTTL is how long CloudAgent's "is Invalid" answers are cached
	// (default 10s).
	NegativeTTL time.Duration `yaml:"negative_ttl"`
	// MaxEntries bounds the number of cached answers (default 100000).
	MaxEntries int `yaml:"max_entries"`
	// MaxBytes bounds the bytes of the answer bodies held in memory
	// (default DefaultCacheMaxBytes); an answer larger than MaxBytes/8 is
	// served but cached nowhere, neither here nor in Redis.
	MaxBytes int `yaml:"max_bytes"`
	// RefreshAhead refreshes hot answers in the background before they
	// expire and, when demand outruns the budget, refreshes stale ones
	// oldest popular first (default false).
	RefreshAhead bool `yaml:"refresh_ahead"`
}

// Limit sets the upstream budget and the optional inbound limits.
type Limit struct {
	// UpstreamPerMinute is the most upstream AHT calls per account in any
	// trailing Window, across all replicas (default 50).
	UpstreamPerMinute int `yaml:"upstream_per_minute"`
	// MaxWait is how long a cache miss may wait for budget (default 0).
	MaxWait time.Duration `yaml:"max_wait"`
	// Window is the trailing window of UpstreamPerMinute (default 60s;
	// shortened only in tests).
	Window time.Duration `yaml:"window"`
	// ClientPerMinute limits each client's inbound requests per minute
	// (default 0: no limit).
	ClientPerMinute int `yaml:"client_per_minute"`
	// Reserve is how many of UpstreamPerMinute background refreshes leave
	// free for client misses (default 2).
	Reserve int `yaml:"reserve"`
	// TokenGenerationsPerHour caps upstream token generations per account
	// (default 10, CloudAgent's own limit).
	TokenGenerationsPerHour int `yaml:"token_generations_per_hour"`
	// AboveCloudAgentLimits must be true for UpstreamPerMinute above 50 or
	// TokenGenerationsPerHour above 10, CloudAgent's documented limits (an
	// account with a raised limit, or a simulator in a test); without it
	// such values are refused, since they would let caproxy exceed them.
	AboveCloudAgentLimits bool `yaml:"above_cloudagent_limits"`
}

// DefaultCacheMaxBytes is cache.max_bytes when not set: 256 MiB, room for
// a sidecar next to the app.
const DefaultCacheMaxBytes = 256 << 20

// CloudAgent's documented limits per account, which the limit settings may
// exceed only with limit.above_cloudagent_limits.
const (
	CloudAgentAHTPerMinute            = 50
	CloudAgentTokenGenerationsPerHour = 10
)

// Redis shares budget, token and cache between replicas.
type Redis struct {
	// URL is a redis:// or rediss:// (TLS) URL: its user and password (an
	// ACL user, or a password alone), database and TLS apply in every
	// mode, and its host is the server when Addrs is empty. Empty, with no
	// Addrs (default), keeps all state in memory on a single node. A
	// password in it is redacted when printed.
	URL string `yaml:"url"`
	// Addrs are Redis Cluster seed nodes (host:port), or Sentinels when
	// MasterName is set.
	Addrs []string `yaml:"addrs"`
	// MasterName is the Sentinel master to follow; empty means no Sentinel.
	MasterName string `yaml:"master_name"`
	// Timeout bounds every Redis call (default 50ms).
	Timeout time.Duration `yaml:"timeout"`
	// OnFailure is what a miss does while Redis is unreachable:
	// RedisDeny (default) or RedisShare.
	OnFailure string `yaml:"on_failure"`
	// Replicas is how many replicas share the budget; required by
	// RedisShare, where each spends at most its 1/Replicas share alone.
	Replicas int `yaml:"replicas"`
}

// State is where a single node keeps what must outlive the process: its
// upstream tokens, its token-generation log and its budget logs. With Redis
// configured, Redis holds them and no state file is used.
type State struct {
	// Dir is the directory of the state file; default the config file's
	// directory, "" to keep state in memory only. It must exist and be
	// writable.
	Dir string `yaml:"dir"`
	// File is the state file's name in Dir, not a key: the config file's
	// name and ".state" (config.yaml.state), so that caproxies whose
	// configs sit side by side keep a file each; "" (a config parsed from
	// bytes) means caproxy.state.
	File string `yaml:"-"`
}

// Enabled reports whether replicas share state through Redis.
func (r Redis) Enabled() bool { return r.URL != "" || len(r.Addrs) > 0 }

// Log selects how the proxy logs.
type Log struct {
	// Format is "text" (default) or "json".
	Format string `yaml:"format"`
	// Level is "debug", "info" (default), "warn" or "error".
	Level string `yaml:"level"`
	// Access turns the access log (one info line per request) on (default)
	// or off; off saves the cost of a line on every cache hit.
	Access bool `yaml:"access"`
}

// defaults returns a Config holding the default of every optional key.
func defaults() *Config {
	return &Config{
		Listen:      "127.0.0.1:8080",
		AdminListen: "127.0.0.1:9090",
		Upstream:    Upstream{URL: UpstreamSim, Timeout: 10 * time.Second},
		Cache: Cache{
			TTL:         30 * time.Second,
			StaleTTL:    10 * time.Minute,
			NegativeTTL: 10 * time.Second,
			MaxEntries:  100000,
			MaxBytes:    DefaultCacheMaxBytes,
		},
		Limit: Limit{
			UpstreamPerMinute:       50,
			Window:                  60 * time.Second,
			Reserve:                 2,
			TokenGenerationsPerHour: 10,
		},
		ClientAuth: ClientAuthRequired,
		Redis:      Redis{Timeout: 50 * time.Millisecond, OnFailure: RedisDeny},
		Log:        Log{Format: "text", Level: "info", Access: true},

		UnknownPaths: UnknownPass,
	}
}

// defaultAccount is the starting value of each entry of accounts.
func defaultAccount() Account { return Account{Auth: AuthToken} }

// Load reads the file at path and parses it with Parse, taking ${VAR}
// values from the process environment. Problems are reported against path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := parse(path, filepath.Dir(path), data, os.LookupEnv)
	if err == nil {
		cfg.State.File = filepath.Base(path) + ".state"
	}
	return cfg, err
}

// Parse expands ${VAR} and ${VAR:-default} in data using lookupEnv (nil
// means no variable is set), decodes the YAML, applies defaults and
// validates. Problems are reported against the name "config.yaml". On
// failure the error is an *Error listing every problem and the Config is nil.
//
// A reference is replaced by its value inside the parsed YAML values only,
// never in the raw text, so a value from the environment cannot change the
// file's structure: "abc #x" stays "abc #x", and a value with a newline and
// "key: value" in it stays one string. "$$" is a literal "$", a "$" not
// followed by "{" or "$" is kept as is, and ${VAR} with VAR unset used in a
// value is an error (references in comments are ignored). ${VAR:-default}
// uses default when VAR is unset or empty. An unquoted value is typed by
// what it holds after substitution (a number, a boolean; empty keeps the
// default). With no file there is no default state.dir: state is kept in
// memory unless the data sets one.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse("config.yaml", "", data, lookupEnv)
}

// parse is Load and Parse: file names the config in problems, stateDir is
// the default of state.dir.
func parse(file, stateDir string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	exp := expand(data, lookupEnv)
	if len(exp.problems) > 0 {
		return nil, newError(file, exp.problems)
	}
	cfg := defaults()
	cfg.State.Dir = stateDir
	d := &decoder{exp: exp, lines: map[string]int{}, tainted: map[string]bool{}}
	d.decodeDocument(cfg)
	if !d.fatal {
		d.validate(cfg)
	}
	if len(d.problems) > 0 {
		return nil, newError(file, d.problems)
	}
	return cfg, nil
}

// Account returns the configured account named userName.
func (c *Config) Account(userName string) (Account, bool) {
	for _, a := range c.Accounts {
		if a.UserName == userName {
			return a, true
		}
	}
	return Account{}, false
}

// Error lists every problem found in a configuration, one per line, each
// starting with "file:line:" (or "file:" when no line applies) so the first
// line alone makes sense.
type Error struct {
	// Problems are the messages, in file order where a line is known.
	Problems []string
}

// Error returns the problems joined by newlines.
func (e *Error) Error() string { return strings.Join(e.Problems, "\n") }

// problem is one message, at a line of the original file (0: no line).
type problem struct {
	line int
	msg  string
}

func newError(file string, ps []problem) *Error {
	// File order; problems without a line (a missing key) come last.
	slices.SortStableFunc(ps, func(a, b problem) int {
		if (a.line == 0) != (b.line == 0) {
			return cmp.Compare(b.line, a.line)
		}
		return cmp.Compare(a.line, b.line)
	})
	e := &Error{Problems: make([]string, 0, len(ps))}
	for _, p := range ps {
		if p.line > 0 {
			e.Problems = append(e.Problems, fmt.Sprintf("%s:%d: %s", file, p.line, p.msg))
		} else {
			e.Problems = append(e.Problems, fmt.Sprintf("%s: %s", file, p.msg))
		}
	}
	return e
}

// apiKeyShown is what printed forms of an Account show instead of its key.
func (a Account) apiKeyShown() string {
	if a.APIKey == "" {
		return ""
	}
	return redacted
}

// String describes the account without its API key.
func (a Account) String() string {
	return fmt.Sprintf("{UserName:%s APIKey:%s Auth:%s}", a.UserName, a.apiKeyShown(), a.Auth)
}

// GoString is String for %#v: the API key is redacted.
func (a Account) GoString() string {
	return fmt.Sprintf("config.Account{UserName:%q, APIKey:%q, Auth:%q}", a.UserName, a.apiKeyShown(), a.Auth)
}

// LogValue logs the account as a group without its API key.
func (a Account) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user_name", a.UserName),
		slog.String("api_key", a.apiKeyShown()),
		slog.String("auth", a.Auth),
	)
}

// MarshalJSON encodes the account with its API key redacted, so a JSON log
// of a whole Config is safe too.
func (a Account) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"user_name": a.UserName, "api_key": a.apiKeyShown(), "auth": a.Auth})
}

// MarshalYAML encodes the account with its API key redacted.
func (a Account) MarshalYAML() (any, error) {
	return map[string]string{"user_name": a.UserName, "api_key": a.apiKeyShown(), "auth": a.Auth}, nil
}

// redactedURL is URL with any password replaced by "xxxxx".
func (r Redis) redactedURL() string {
	u, err := url.Parse(r.URL)
	if err != nil {
		if strings.Contains(r.URL, "@") {
			return redacted
		}
		return r.URL
	}
	return u.Redacted()
}

// shown is r with the URL's password redacted, for every printed form.
func (r Redis) shown() map[string]any {
	return map[string]any{"url": r.redactedURL(), "addrs": r.Addrs, "master_name": r.MasterName,
		"timeout": r.Timeout.String(), "on_failure": r.OnFailure, "replicas": r.Replicas}
}

// String shows r with any password redacted.
func (r Redis) String() string {
	return fmt.Sprintf("{URL:%s Addrs:%v MasterName:%s Timeout:%v OnFailure:%s Replicas:%d}",
		r.redactedURL(), r.Addrs, r.MasterName, r.Timeout, r.OnFailure, r.Replicas)
}

// GoString is String for %#v: any password is redacted.
func (r Redis) GoString() string {
	return fmt.Sprintf("config.Redis{URL:%q, Addrs:%#v, MasterName:%q, Timeout:%d, OnFailure:%q, Replicas:%d}",
		r.redactedURL(), r.Addrs, r.MasterName, r.Timeout, r.OnFailure, r.Replicas)
}

// LogValue logs r with any password redacted.
func (r Redis) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", r.redactedURL()), slog.Any("addrs", r.Addrs),
		slog.String("master_name", r.MasterName), slog.Duration("timeout", r.Timeout),
		slog.String("on_failure", r.OnFailure), slog.Int("replicas", r.Replicas))
}

// MarshalJSON encodes r with any password redacted.
func (r Redis) MarshalJSON() ([]byte, error) { return json.Marshal(r.shown()) }

// MarshalYAML encodes r with any password redacted.
func (r Redis) MarshalYAML() (any, error) { return r.shown(), nil }

// SlogLevel is Level as a slog.Level (info when Level is not a valid level).
func (l Log) SlogLevel() slog.Level {
	switch strings.ToLower(l.Level) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
