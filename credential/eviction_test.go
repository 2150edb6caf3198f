package credential

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/caproxy/caproxy/internal/syncbuf"
)

// TestCheckEvictionPolicy checks the warning for each kind of policy, and
// that a user without CONFIG permission gets a note, not a failure.
func TestCheckEvictionPolicy(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Start(t)})
	t.Cleanup(func() { rdb.Close() })
	for _, c := range []struct {
		policy string
		safe   bool
	}{
		{"noeviction", true},
		{"allkeys-lru", false},
		{"volatile-lru", false},
		{"volatile-ttl", false},
		{"allkeys-random", false},
	} {
		if err := rdb.ConfigSet(ctx, "maxmemory-policy", c.policy).Err(); err != nil {
			t.Fatal(err)
		}
		logs := &syncbuf.Buffer{}
		policy, safe := CheckEvictionPolicy(ctx, rdb, slog.New(slog.NewTextHandler(logs, nil)))
		if policy != c.policy || safe != c.safe {
			t.Errorf("%s: got %q, safe %v", c.policy, policy, safe)
		}
		warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "maxmemory_policy="+c.policy)
		if warned == c.safe {
			t.Errorf("%s: warned %v, want %v; logs:\n%s", c.policy, warned, !c.safe, logs)
		}
	}

	// A user who may not run CONFIG.
	if err := rdb.Do(ctx, "ACL", "SETUSER", "limited", "on", ">limited-pw", "~*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	limited := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, Username: "limited", Password: "limited-pw"})
	t.Cleanup(func() { limited.Close() })
	logs := &syncbuf.Buffer{}
	policy, safe := CheckEvictionPolicy(ctx, limited, slog.New(slog.NewTextHandler(logs, nil)))
	if policy != "" || safe || !strings.Contains(logs.String(), "NOPERM") || !strings.Contains(logs.String(), "level=INFO") {
		t.Errorf("NOPERM: got %q, safe %v; logs:\n%s", policy, safe, logs)
	}
}
