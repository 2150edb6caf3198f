package credential

import (
	"context"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SafeEvictionPolicy is the only maxmemory-policy under which Redis keeps
// every key caproxy stores: its budget logs, token claims and holds, shared
// cache entries and tokens all carry TTLs, so volatile-* policies may evict
// them as readily as allkeys-* ones. An evicted budget log forgets calls
// made (the next ones can exceed CloudAgent's limit); an evicted token or
// claim can cost a generation.
const SafeEvictionPolicy = "noeviction"

// CheckEvictionPolicy reads Redis' maxmemory-policy and logs a warning on
// log unless it is SafeEvictionPolicy. A Redis user without permission for
// CONFIG GET (NOPERM), or a managed Redis that hides CONFIG, gets one info
// line instead, since the policy cannot be known. It returns the policy
// ("" when unknown) and whether it is safe; it never fails the caller: the
// policy is advice about Redis' configuration, not a reason not to start.
func CheckEvictionPolicy(ctx context.Context, client redis.UniversalClient, log *slog.Logger) (policy string, safe bool) {
	v, err := client.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		log.Info("could not read redis maxmemory-policy; make sure it is "+SafeEvictionPolicy+
			" (with another policy Redis may evict budget logs and tokens under memory pressure)", "err", err)
		return "", false
	}
	policy = strings.ToLower(v["maxmemory-policy"])
	if policy == SafeEvictionPolicy {
		return policy, true
	}
	log.Warn("redis maxmemory-policy is not "+SafeEvictionPolicy+": under memory pressure Redis may evict caproxy's keys "+
		"(all carry TTLs, so volatile-* policies evict them too), forgetting calls made (then CloudAgent's limit can be exceeded) "+
		"or tokens (a needless generation); set maxmemory-policy "+SafeEvictionPolicy+", or give Redis room and maxmemory 0",
		"maxmemory_policy", policy)
	return policy, false
}
