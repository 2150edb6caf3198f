// Package redisconn opens the one Redis connection the replicas of caproxy
// share state through (budget, upstream token, cache), as operators run
// Redis: a single server (redis:// or rediss:// with an ACL user and
// password), a Redis Cluster, or a master found through Sentinel, all
// through go-redis's UniversalClient.
//
// Every call it carries is bounded by one short Timeout (no retries, no
// dial retries), and a circuit breaker stands in front of them: after a
// call fails for Redis's sake (unreachable, timed out, loading, cluster
// down), every later call fails at once with ErrDown, without touching the
// network, until a background probe sees Redis answer again. So while Redis
// is down no request waits on it longer than Timeout, and most not at all.
//
// Redis that answers but refuses what caproxy runs (an ACL user without
// EVAL or EVALSHA or a command its scripts call, a key pattern that leaves
// out caproxy's keys, scripting renamed away) is treated as down too, and
// said so once: at start and on every reconnect the connection loads the
// stores' scripts and checks those permissions (Options.Scripts), and keeps
// the circuit open, probing, until they are granted.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/redisconn/breaker"
)

// DefaultTimeout bounds each Redis call when Options.Timeout is zero: well
// under the upstream's latency, ample for Redis on a LAN.
const DefaultTimeout = 50 * time.Millisecond

// ErrDown is what every call returns, at once, while the circuit is open.
var ErrDown = errors.New("redis: unavailable (circuit open; probing in the background)")

// Options say where Redis is and how long a call may take.
type Options struct {
	// URL is a redis:// or rediss:// (TLS) URL: its user and password
	// (an ACL user, or only a password), database and TLS apply in every
	// mode; its host is the server when Addrs is empty.
	URL string
	// Addrs, when not empty, are Redis Cluster seed nodes, or Sentinels
	// when MasterName is set; URL's host is then not used. URL's user and
	// password are the master's (and the cluster nodes'); Sentinels are
	// asked without credentials.
	Addrs []string
	// MasterName is the Sentinel master's name; empty means no Sentinel.
	MasterName string
	// Timeout bounds each call (dial, write, read, wait for a pooled
	// connection) and each probe; zero means DefaultTimeout.
	Timeout time.Duration
	// ProbeEvery is how often the breaker probes while Redis is down; zero
	// means breaker.DefaultProbeEvery.
	ProbeEvery time.Duration
	// OnChange, if set, is told each transition: up false with the error
	// that opened the circuit, up true when a probe closed it.
	OnChange func(up bool, err error)

	// Scripts are the Lua scripts (their source) the stores run. When
	// Scripts or Commands are set, WarmUp and every probe after an outage
	// load each script (SCRIPT LOAD) and check that this user may run
	// EVAL and EVALSHA on each of Keys and, on Redis 7 and later, each
	// command the scripts call and each of Commands: until then the
	// circuit stays open and Unusable says what is missing.
	Scripts []string
	// Commands are the commands the stores run directly (GET, SET, …),
	// checked with the scripts'.
	Commands []string
	// Keys are sample keys, one per key prefix the stores use, checked
	// against the user's key patterns; none means no key is checked.
	Keys []string
	// OnUnusable, if set, is told once each time Redis is found unusable
	// (a new reason): err wraps ErrUnusable and names what is missing.
	OnUnusable func(err error)
}

// Conn is an open Redis connection behind a circuit breaker.
type Conn struct {
	// Client is the UniversalClient every Redis-backed store uses.
	Client  redis.UniversalClient
	breaker *breaker.Breaker
	timeout time.Duration

	// scripts, cmds and keys are what check checks (see Options).
	scripts, cmds, keys []string
	onUnusable          func(err error)
	// unusable is why Redis cannot be used, from the last check; nil
	// when it can (or was not checked).
	unusable atomic.Pointer[error]
}

// Open builds the client described by o; it does not contact Redis (a
// Redis down at startup is an outage like any other).
func Open(o Options) (*Conn, error) {
	base, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	uo := &redis.UniversalOptions{
		Addrs:      []string{base.Addr},
		Username:   base.Username,
		Password:   base.Password,
		DB:         base.DB,
		TLSConfig:  base.TLSConfig,
		MasterName: o.MasterName,
		// Fail fast: one attempt, each step bounded; the breaker, not a
		// retry loop, deals with an outage.
		MaxRetries:            -1,
		DialerRetries:         1,
		DialerRetryTimeout:    time.Millisecond,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
		ContextTimeoutEnabled: true,
	}
	if len(o.Addrs) > 0 {
		uo.Addrs = o.Addrs
		uo.IsClusterMode = o.MasterName == ""
	}
	c := &Conn{Client: redis.NewUniversalClient(uo), timeout: timeout,
		scripts: o.Scripts, keys: o.Keys, onUnusable: o.OnUnusable}
	c.cmds = commands(o.Scripts, o.Commands)
	probeTimeout := max(timeout, 10*time.Millisecond)
	if c.checks() {
		// The check is a few round trips, each bounded by timeout.
		probeTimeout *= time.Duration(2 + len(o.Scripts) + 2*max(len(o.Keys), 1))
	}
	c.breaker = &breaker.Breaker{
		Probe:        c.probe,
		ProbeEvery:   o.ProbeEvery,
		ProbeTimeout: probeTimeout,
		OnChange:     o.OnChange,
	}
	c.Client.AddHook(hook{c})
	return c, nil
}

// WarmUp connects to Redis before the first request needs it (a cluster
// client also learns the slot map), trying for up to within: a cold
// connection may take longer than one Timeout. If Redis still does not
// answer, the circuit starts open, probing in the background, and WarmUp
// returns the last error; serving goes on either way.
func (c *Conn) WarmUp(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		err := c.probe(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrUnusable) { // trying again will not help
			c.breaker.Fail(err)
			return err
		}
		select {
		case <-ctx.Done():
			c.breaker.Fail(err)
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Up reports whether the circuit is closed (Redis answering, and usable).
func (c *Conn) Up() bool { return c.breaker.Up() }

// Unusable returns why Redis answers but cannot be used (wrapping
// ErrUnusable: a permission missing), or nil when the last check passed
// or none ran. The circuit is open meanwhile, so Up is false.
func (c *Conn) Unusable() error {
	if p := c.unusable.Load(); p != nil {
		return *p
	}
	return nil
}

// checks reports whether probes check permissions.
func (c *Conn) checks() bool { return len(c.scripts)+len(c.cmds) > 0 }

// Errors returns how many calls have failed for Redis's sake.
func (c *Conn) Errors() int64 { return c.breaker.Failures() }

// Close stops the probe and closes the client.
func (c *Conn) Close() error {
	c.breaker.Close()
	return c.Client.Close()
}

// probeKey marks the probe's context: the probe must reach Redis while the
// circuit is open.
type probeKey struct{}

// probe pings Redis (every master of a cluster), then checks that it is
// usable (see Options.Scripts).
func (c *Conn) probe(ctx context.Context) error {
	ctx = context.WithValue(ctx, probeKey{}, true)
	var err error
	if cc, ok := c.Client.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			return n.Ping(ctx).Err()
		})
	} else {
		err = c.Client.Ping(ctx).Err()
	}
	if !c.checks() {
		return err
	}
	if err != nil {
		if refused(err) { // the user may not even PING
			err = unusable("PING", err)
			c.setUnusable(err)
		}
		return err
	}
	err = c.check(ctx)
	switch {
	case err == nil:
		c.unusable.Store(nil)
	case errors.Is(err, ErrUnusable):
		c.setUnusable(err)
	}
	return err
}

// setUnusable records why Redis cannot be used, telling OnUnusable when
// the reason is new.
func (c *Conn) setUnusable(err error) {
	prev := c.unusable.Swap(&err)
	if (prev == nil || (*prev).Error() != err.Error()) && c.onUnusable != nil {
		c.onUnusable(err)
	}
}

// hook puts the breaker and the timeout in front of every command and
// pipeline of the client.
type hook struct{ c *Conn }

func (h hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ctx, cancel, err := h.c.begin(ctx)
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		defer cancel()
		err = next(ctx, cmd)
		h.c.end(ctx, err)
		return err
	}
}

func (h hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel, err := h.c.begin(ctx)
		if err != nil {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return err
		}
		defer cancel()
		err = next(ctx, cmds)
		h.c.end(ctx, err)
		return err
	}
}

// begin refuses a call while the circuit is open, else bounds it.
func (c *Conn) begin(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if !c.breaker.Allow() && ctx.Value(probeKey{}) == nil {
		return nil, nil, ErrDown
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return ctx, cancel, nil
}

// end opens the circuit when a call failed for Redis's sake.
func (c *Conn) end(ctx context.Context, err error) {
	if ctx.Value(probeKey{}) == nil && outage(ctx, err) {
		c.breaker.Fail(err)
	}
}

// outage reports whether err says Redis is unavailable, rather than that
// the key is missing, the command was wrong, or the caller gave up.
func outage(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false // the caller left
	}
	if errors.Is(err, redis.ErrPoolTimeout) {
		// Every pooled connection is busy: a burst here, not Redis down.
		// (A hung Redis trips the breaker through the calls holding them.)
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // our Timeout (or the caller's, shorter: Redis was slow)
	}
	var re redis.Error
	if errors.As(err, &re) {
		// A reply from Redis: only these say it cannot serve now.
		msg := re.Error()
		for _, p := range []string{"LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "READONLY"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true // network errors, EOF, closed or exhausted pool
}

// SetLogger sends go-redis's own messages (pool and dial errors, which
// repeat on every attempt while Redis is down) to logger at debug level.
// It is process-wide, as go-redis's logger is.
func SetLogger(logger *slog.Logger) {
	redis.SetLogger(debugLogger{logger})
}

type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Printf(ctx context.Context, format string, v ...any) {
	d.l.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
