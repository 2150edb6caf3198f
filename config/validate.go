package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// validate records every problem with the decoded cfg and normalizes the
// case of log.format and log.level.
func (d *decoder) validate(c *Config) {
	listenOK := d.hostPort("listen", c.Listen)
	adminOK := d.hostPort("admin_listen", c.AdminListen)
	if listenOK && adminOK && c.Listen == c.AdminListen && !strings.HasSuffix(c.Listen, ":0") {
		d.fail("admin_listen", "admin_listen must differ from listen")
	}

	d.upstreamURL(c.Upstream.URL)
	d.positive("upstream.timeout", c.Upstream.Timeout)
	if m := c.Upstream.MaxAnswer; m != 0 && m < 1<<10 {
		d.fail("upstream.max_answer", "upstream.max_answer must be at least 1024 (bytes); got %d", m)
	}

	if len(c.Accounts) == 0 {
		d.fail("accounts", "accounts: at least one account is required")
	}
	first := map[string]int{}
	for i, a := range c.Accounts {
		p := fmt.Sprintf("accounts[%d]", i)
		if a.UserName == "" {
			d.fail(p+".user_name", "%s.user_name is empty", p)
		} else if j, dup := first[a.UserName]; dup {
			d.fail(p+".user_name", "%s.user_name%s repeats accounts[%d]", p, d.echo(p+".user_name", a.UserName), j)
		} else {
			first[a.UserName] = i
		}
		if a.APIKey == "" {
			d.fail(p+".api_key", "%s.api_key is empty", p)
		}
		if a.Auth != AuthToken && a.Auth != AuthAPIKey {
			d.fail(p+".auth", "%s.auth%s must be %s or %s", p, d.echo(p+".auth", a.Auth), AuthToken, AuthAPIKey)
		}
	}

	routeNames := map[string]int{}
	for i, rt := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if rt.Name == "" {
			d.fail(p+".name", "%s.name is empty", p)
		} else if j, dup := routeNames[rt.Name]; dup {
			d.fail(p+".name", "%s.name %q repeats routes[%d]", p, rt.Name, j)
		} else {
			routeNames[rt.Name] = i
		}
		if !strings.HasPrefix(rt.Path, "/") {
			d.fail(p+".path", "%s.path must start with /", p)
		}
		switch rt.Auth {
		case "", "apikey", "token", "account", "query":
		default:
			d.fail(p+".auth", "%s.auth %q must be apikey, token, query or account", p, rt.Auth)
		}
		if rt.Budget < 0 {
			d.fail(p+".budget", "%s.budget must be 0 (none) or more, got %d", p, rt.Budget)
		}
		d.nonNegative(p+".window", rt.Window)
		d.nonNegative(p+".cache_ttl", rt.CacheTTL)
		d.nonNegative(p+".stale_ttl", rt.StaleTTL)
		if rt.Write && rt.CacheTTL > 0 {
			d.fail(p+".cache_ttl", "%s: a write route cannot be cached", p)
		}
		if !c.Limit.AboveCloudAgentLimits {
			d.routeLimit(p, rt)
		}
	}

	if c.UnknownPaths != UnknownPass && c.UnknownPaths != UnknownRefuse {
		d.fail("unknown_paths", "unknown_paths%s must be %s or %s", d.echo("unknown_paths", c.UnknownPaths), UnknownPass, UnknownRefuse)
	}

	d.positive("cache.ttl", c.Cache.TTL)
	d.nonNegative("cache.stale_ttl", c.Cache.StaleTTL)
	d.nonNegative("cache.negative_ttl", c.Cache.NegativeTTL)
	if c.Cache.MaxEntries <= 0 {
		d.fail("cache.max_entries", "cache.max_entries must be greater than 0, got %d", c.Cache.MaxEntries)
	}
	if c.Cache.MaxBytes <= 0 {
		d.fail("cache.max_bytes", "cache.max_bytes must be greater than 0, got %d", c.Cache.MaxBytes)
	}

	if c.Limit.UpstreamPerMinute <= 0 {
		d.fail("limit.upstream_per_minute", "limit.upstream_per_minute must be greater than 0, got %d", c.Limit.UpstreamPerMinute)
	}
	if c.Limit.Reserve < 0 || c.Limit.UpstreamPerMinute > 0 && c.Limit.Reserve >= c.Limit.UpstreamPerMinute {
		d.fail("limit.reserve", "limit.reserve must be 0 or more and less than limit.upstream_per_minute (%d), got %d", c.Limit.UpstreamPerMinute, c.Limit.Reserve)
	}
	d.nonNegative("limit.max_wait", c.Limit.MaxWait)
	d.positive("limit.window", c.Limit.Window)
	if c.Limit.ClientPerMinute < 0 {
		d.fail("limit.client_per_minute", "limit.client_per_minute must be 0 (off) or more, got %d", c.Limit.ClientPerMinute)
	}
	if c.Limit.TokenGenerationsPerHour <= 0 {
		d.fail("limit.token_generations_per_hour", "limit.token_generations_per_hour must be greater than 0, got %d", c.Limit.TokenGenerationsPerHour)
	}

	if !c.Limit.AboveCloudAgentLimits {
		if c.Limit.UpstreamPerMinute > CloudAgentAHTPerMinute {
			d.fail("limit.upstream_per_minute", "limit.upstream_per_minute %d is above CloudAgent's limit of %d a minute; "+
				"if your account's limit was raised, also set limit.above_cloudagent_limits: true",
				c.Limit.UpstreamPerMinute, CloudAgentAHTPerMinute)
		}
		if c.Limit.TokenGenerationsPerHour > CloudAgentTokenGenerationsPerHour {
			d.fail("limit.token_generations_per_hour", "limit.token_generations_per_hour %d is above CloudAgent's limit of %d an hour; "+
				"if your account's limit was raised, also set limit.above_cloudagent_limits: true",
				c.Limit.TokenGenerationsPerHour, CloudAgentTokenGenerationsPerHour)
		}
	}

	switch c.ClientAuth {
	case ClientAuthRequired:
	case ClientAuthOff:
		if host, _, err := net.SplitHostPort(c.Listen); err == nil && !isLoopback(host) {
			d.fail("client_auth", "client_auth: off is allowed only when listen is a loopback address (127.x.x.x, ::1 or localhost), not %s",
				d.echoBare("listen", c.Listen))
		}
	default:
		d.fail("client_auth", "client_auth%s must be %s or %s", d.echo("client_auth", c.ClientAuth), ClientAuthRequired, ClientAuthOff)
	}

	if host, _, err := net.SplitHostPort(c.AdminListen); err == nil && !isLoopback(host) && c.AdminToken == "" {
		d.fail("admin_listen", "admin_token is required when admin_listen is not a loopback address (127.x.x.x, ::1 or localhost): "+
			"the admin listener can purge the cache and profile the process; set admin_token: ${CAPROXY_ADMIN_TOKEN}")
	}
	if c.AdminToken != "" && len(c.AdminToken) < minAdminToken {
		d.fail("admin_token", "admin_token must be at least %d characters", minAdminToken)
	}

	d.redis(&c.Redis)

	// Both files or neither: one alone is a half-done TLS setup, and
	// serving plain HTTP instead would surprise. The files themselves are
	// read and checked by package main (at start, -check and SIGHUP).
	if c.TLS.Enabled() && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		d.fail("tls", "tls.cert_file and tls.key_file must be set together (both for HTTPS, neither for plain HTTP)")
	}

	switch f := strings.ToLower(c.Log.Format); f {
	case "text", "json":
		c.Log.Format = f
	default:
		d.fail("log.format", "log.format%s must be text or json", d.echo("log.format", c.Log.Format))
	}
	switch l := strings.ToLower(c.Log.Level); l {
	case "debug", "info", "warn", "error":
		c.Log.Level = l
	default:
		d.fail("log.level", "log.level%s must be debug, info, warn or error", d.echo("log.level", c.Log.Level))
	}
}

// routeLimit refuses a route budget that lets more calls through than
// CloudAgent documents for the route's path: more calls, or the same calls
// in a shorter window (a higher rate). CloudAgent would refuse the excess
// upstream, after caproxy had spent the calls.
func (d *decoder) routeLimit(p string, rt Route) {
	calls, window, ok := cloudagent.DocumentedLimit(rt.Path)
	if !ok || rt.Budget == 0 || !cloudagent.ExceedsLimit(rt.Budget, rt.Window, calls, window) {
		return
	}
	w := rt.Window
	if w <= 0 {
		w = window
	}
	d.fail(p+".budget", "%s.budget %d per %s on %s is above CloudAgent's limit of %d per %s; "+
		"if your account's limit was raised, also set limit.above_cloudagent_limits: true",
		p, rt.Budget, w, rt.Path, calls, window)
}

// fail records a problem about the key at path, at its line if known (or
// the line of the nearest enclosing key).
func (d *decoder) fail(path, format string, args ...any) {
	line := 0
	for p := path; p != ""; {
		if l, ok := d.lines[p]; ok {
			line = l
			break
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	d.problems = append(d.problems, problem{line, fmt.Sprintf(format, args...)})
}

// echo returns ` "value"` for a message, or "" when the value at path came
// from the environment.
func (d *decoder) echo(path, value string) string {
	if d.tainted[path] {
		return ""
	}
	return " " + strconv.Quote(value)
}

// echoBare is echo without the leading space, naming the key when the value
// may not be shown.
func (d *decoder) echoBare(path, value string) string {
	if d.tainted[path] {
		return "the " + path + " from the environment"
	}
	return strconv.Quote(value)
}

func (d *decoder) positive(path string, v time.Duration) {
	if v <= 0 {
		d.fail(path, "%s must be greater than 0%s", path, d.echoDuration(path, v))
	}
}

func (d *decoder) nonNegative(path string, v time.Duration) {
	if v < 0 {
		d.fail(path, "%s must not be negative%s", path, d.echoDuration(path, v))
	}
}

func (d *decoder) echoDuration(path string, v time.Duration) string {
	if d.tainted[path] {
		return ""
	}
	return ", got " + v.String()
}

// hostPort checks that v is host:port with a numeric port.
func (d *decoder) hostPort(path, v string) bool {
	_, port, err := net.SplitHostPort(v)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = fmt.Errorf("port out of range")
		}
	}
	if err != nil {
		d.fail(path, "%s%s must be host:port with a numeric port, such as 127.0.0.1:8080", path, d.echo(path, v))
		return false
	}
	return true
}

// minAdminToken is the shortest admin_token accepted.
const minAdminToken = 16

// isLoopback reports whether a listen host only accepts local connections.
// An empty host listens on every interface, so it is not loopback.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// upstreamURL checks upstream.url: builtin:sim or an http(s) base URL.
func (d *decoder) upstreamURL(v string) {
	const path = "upstream.url"
	if v == UpstreamSim {
		return
	}
	if strings.HasPrefix(v, "builtin:") {
		d.fail(path, "upstream.url%s: the only builtin is %s", d.echo(path, v), UpstreamSim)
		return
	}
	u, err := url.Parse(v)
	if err == nil && u.User != nil {
		// Never echo: the user info may hold a password.
		d.fail(path, "upstream.url must not contain a user name or password")
		return
	}
	shown := d.echo(path, v)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https"):
		d.fail(path, "upstream.url%s must be %s or an http:// or https:// URL such as https://in1-ccaas-api.ozonetel.com", shown, UpstreamSim)
	case u.Host == "":
		d.fail(path, "upstream.url%s has no host", shown)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(v, "#"):
		d.fail(path, "upstream.url%s must not have a query or fragment", shown)
	}
}

// redis checks the redis section. The URL is never echoed: it may hold a
// password.
func (d *decoder) redis(r *Redis) {
	if v := r.URL; v != "" {
		u, err := url.Parse(v)
		switch {
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss"):
			d.fail("redis.url", "redis.url must be empty or a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0")
		case u.Host == "" && len(r.Addrs) == 0:
			d.fail("redis.url", "redis.url has no host (want redis://host:port, or redis.addrs)")
		}
	}
	for i, a := range r.Addrs {
		p := fmt.Sprintf("redis.addrs[%d]", i)
		d.hostPort(p, a)
	}
	if r.MasterName != "" && len(r.Addrs) == 0 {
		d.fail("redis.master_name", "redis.master_name needs redis.addrs: the Sentinels to ask")
	}
	d.positive("redis.timeout", r.Timeout)
	switch r.OnFailure {
	case RedisDeny:
	case RedisShare:
		if r.Replicas < 1 {
			d.fail("redis.on_failure", "redis.on_failure: share needs redis.replicas, how many replicas share the budget (each spends at most 1/replicas alone)")
		}
	default:
		d.fail("redis.on_failure", "redis.on_failure%s must be %s or %s", d.echo("redis.on_failure", r.OnFailure), RedisDeny, RedisShare)
	}
	if r.Replicas < 0 {
		d.fail("redis.replicas", "redis.replicas must not be negative, got %d", r.Replicas)
	}
}
