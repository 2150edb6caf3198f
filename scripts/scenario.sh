#!/usr/bin/env bash
# scenario.sh — the two regimes of refresh scheduling (issue 11), on a
# shortened window so a run takes about a minute:
#
#   make load SCENARIO=below   # 20 hot keys polled every second, ttl 6 s:
#                              # well below the budget
#   make load SCENARIO=above   # 300 keys polled every 3 s (600 a window,
#                              # 12x the budget), ttl 3 s
#   REFRESH=false make load SCENARIO=above   # the same without
#                                            # cache.refresh_ahead: before/after
#
# Both the simulator (-limit 50 -window 6s) and caproxy (limit.window: 6s,
# upstream_per_minute: 50, reserve: 2) count 50 calls per 6 s window. It
# prints what the clients got (scripts/poll: hit ratio, misses a client
# waited for, 429s, p50/p99 of the served Age) after the warm-up (below:
# the first window; above: once every key was answered once), the budget
# used (upstream calls / allowed over the run) and the simulator's
# refusals; it fails if the simulator refused any call for its limit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SCENARIO=${SCENARIO:-below}
REFRESH=${REFRESH:-true}
WINDOW_S=6
LIMIT=50
case $SCENARIO in
below) keys=20 every=1s ttl=6s duration=30 poll_args="-warmup 6s" ;;
above) keys=300 every=3s ttl=3s duration=60 poll_args="-warmup 0s -after-all -late-at 45s -late 5 -window ${WINDOW_S}s" ;;
*) die "SCENARIO must be below or above (got $SCENARIO)" ;;
esac
need go curl

echo "building caproxy and the poller"
build_caproxy
timeout 600 go build -o "$tmp/poll" ./scripts/poll || die "go build ./scripts/poll failed"

{ read -r sim_port; read -r proxy_port; read -r admin_port; } < <(free_ports 3)
sim_url="http://127.0.0.1:$sim_port"
admin_url="http://127.0.0.1:$admin_port"
cat >"$tmp/config.yaml" <<YAML
listen: 127.0.0.1:$proxy_port
admin_listen: 127.0.0.1:$admin_port
upstream:
  url: $sim_url
accounts:
  - user_name: demo-basic
    api_key: demo-basic-key
    auth: apikey
cache:
  ttl: $ttl
  stale_ttl: 10m
  refresh_ahead: $REFRESH
limit:
  upstream_per_minute: $LIMIT
  window: ${WINDOW_S}s
  reserve: 2
client_auth: required
log:
  level: warn
  access: false
YAML
start_bg sim "$tmp/caproxy" sim -listen "127.0.0.1:$sim_port" -latency 20ms -limit "$LIMIT" -window "${WINDOW_S}s"
wait_ready sim "$sim_url/sim/stats" 20
start_bg caproxy "$tmp/caproxy" -config "$tmp/config.yaml"
wait_ready caproxy "$admin_url/readyz" 20

echo "scenario $SCENARIO: $keys keys each polled every $every for ${duration}s; ttl $ttl; $LIMIT calls per ${WINDOW_S}s window; refresh_ahead $REFRESH"
# shellcheck disable=SC2086
run_bg $((duration + 30)) "$tmp/poll.txt" "$tmp/poll" -url "http://127.0.0.1:$proxy_port/ca_apis/aht" \
	-keys "$keys" -every "$every" -duration "${duration}s" $poll_args || {
	cat "$tmp/poll.txt" >&2
	die "poll failed"
}
sed 's/^POLL //' "$tmp/poll.txt"
curl -fsS --max-time 10 "$admin_url/metrics" >"$tmp/metrics.txt" || die "could not read /metrics"
curl -fsS --max-time 10 "$sim_url/sim/stats" >"$tmp/stats.json" || die "could not read /sim/stats"
stat() { grep -o "\"$1\":[0-9]*" "$tmp/stats.json" | head -n 1 | cut -d: -f2; }
admitted=$(stat AHTAdmitted)
limited=$(stat AHTLimited)
allowed=$((LIMIT * duration / WINDOW_S))
awk -v a="$admitted" -v al="$allowed" 'BEGIN { printf "budget used %d upstream calls / %d allowed = %.1f%%\n", a, al, 100 * a / al }'
grep '^caproxy_refreshes_total' "$tmp/metrics.txt" | sed 's/^/refreshes: /' || echo "refreshes: none"
echo "simulator refusals for its limit: $limited (MaxInWindow $(stat MaxInWindow))"
((limited == 0)) || die "the simulator refused $limited calls for its limit"
