#!/usr/bin/env bash
# load.sh — drive a realistic AHT mix through caproxy in front of the
# CloudAgent simulator, and check that the upstream limit held.
#
#   scripts/load.sh                             (or: make load)
#   DURATION=60s CONNS=128 SIM_LATENCY=50ms scripts/load.sh
#
# Using caproxy as a load-testing target
# --------------------------------------
# The caproxy binary carries CloudAgent's simulator, which enforces the
# documented contract (messages, 50 AHT calls per account in any trailing
# 60 s, token lifetime, 10 token generations per hour):
#
#   caproxy sim -listen 127.0.0.1:8081 -latency 20ms   # a stand-in CloudAgent
#       [-error-rate 0.05]          # answer that share of AHT calls with 503
#       [-limit 50 -window 60s]     # its AHT limit per account
#       [-data accounts.json]       # own accounts, agents, campaigns
#
# Its default accounts are demo/demo-key (token auth) and
# demo-basic/demo-basic-key (apikey auth); agents agent001..agent300,
# campaigns campaign001..campaign100. Point caproxy at it
# (upstream.url: http://127.0.0.1:8081) and load caproxy's listen address
# with any HTTP tool, e.g. the mix this script uses:
#
#   wrk -t2 -c64 -d20s -s scripts/mix.lua http://127.0.0.1:8080/ca_apis/aht
#
# Then read what the upstream saw: GET http://127.0.0.1:8081/sim/stats
# (AHTAdmitted, AHTLimited, LimitViolations, MaxArrivalsInWindow, TokenGenerations, per account;
# POST /sim/reset zeroes it) and what caproxy did: GET /metrics on its
# admin listener (caproxy_requests_total{route="aht",outcome=...}). A run is
# good when LimitViolations is 0 and MaxArrivalsInWindow (arrivals in a trailing
# minute, refused ones included) is at most 50: caproxy never let the
# simulator refuse a call for any of its limits.
#
# This script does all of that on free loopback ports and stops everything
# it started when it ends. Knobs: DURATION (20s), CONNS (64), THREADS (2),
# SIM_LATENCY (20ms, added to every simulated CloudAgent answer), SIM_ARGS
# (more simulator flags, e.g. "-error-rate 0.05" to see stale answers
# served, "-delay 500ms" for a one-way network delay the budget's margin
# must absorb, or "-limit 30" to watch this script catch a broken limit).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION=${DURATION:-20s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
SIM_LATENCY=${SIM_LATENCY:-20ms}
SIM_ARGS=${SIM_ARGS:-}
need go wrk curl

secs=$(seconds_of "$DURATION")
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || die "DURATION must look like 20s, 2m or 20 (got $DURATION)"

echo "building caproxy"
build_caproxy

{ read -r sim_port; read -r proxy_port; read -r admin_port; } < <(free_ports 3)
sim_url="http://127.0.0.1:$sim_port"
admin_url="http://127.0.0.1:$admin_port"

cat >"$tmp/config.yaml" <<YAML
listen: 127.0.0.1:$proxy_port
admin_listen: 127.0.0.1:$admin_port
upstream:
  url: $sim_url
accounts:
  - user_name: demo
    api_key: demo-key
    auth: token
  - user_name: demo-basic
    api_key: demo-basic-key
    auth: apikey
cache:
  ttl: 30s
client_auth: required
log:
  level: warn
YAML
"$tmp/caproxy" -config "$tmp/config.yaml" -check >/dev/null 2>"$tmp/check.log" || {
	cat "$tmp/check.log" >&2
	die "caproxy refused the generated config"
}

# SIM_ARGS is split into words on purpose: it holds several flags.
# shellcheck disable=SC2086
start_bg sim "$tmp/caproxy" sim -listen "127.0.0.1:$sim_port" -latency "$SIM_LATENCY" $SIM_ARGS
wait_ready sim "$sim_url/sim/stats" 20
start_bg caproxy "$tmp/caproxy" -config "$tmp/config.yaml"
wait_ready caproxy "$admin_url/readyz" 20

echo "load: wrk -t$THREADS -c$CONNS -d$DURATION -s scripts/mix.lua, simulator latency $SIM_LATENCY${SIM_ARGS:+, simulator flags $SIM_ARGS}"
echo "cores: $(nproc 2>/dev/null || echo ?), load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?)"
out="$tmp/wrk.txt"
if ! run_bg $((secs + 30)) "$out" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 10s \
	-s scripts/mix.lua "http://127.0.0.1:$proxy_port/ca_apis/aht"; then
	cat "$out" >&2
	show_log caproxy
	die "wrk failed"
fi
grep -q '^MIX requests=' "$out" || {
	cat "$out" >&2
	die "wrk printed no results"
}

curl -fsS --max-time 10 "$admin_url/metrics" >"$tmp/metrics.txt" || die "could not read caproxy's /metrics"
curl -fsS --max-time 10 "$sim_url/sim/stats" >"$tmp/stats.json" || die "could not read the simulator's /sim/stats"

# stat KEY reads a top-level counter of /sim/stats (they come before
# PerAccount, so the first match is the total).
stat() {
	grep -o "\"$1\":[0-9]*" "$tmp/stats.json" | head -n 1 | cut -d: -f2
}

echo
echo "== client side (wrk)"
awk '
$2 ~ /^requests=/ { split($2, a, "="); split($3, s, "="); split($4, r, "=")
	printf "throughput      %s requests in %s s: %s requests/s\n", a[2], s[2], r[2] }
$2 == "latency_ms" { printf "latency (ms)    %s %s %s %s\n", $3, $4, $5, $6 }
$2 == "socket_errors" { printf "socket errors   %s %s %s %s\n", $3, $4, $5, $6 }
$2 == "status" { st = st sprintf(" %s:%s", $3, $4) }
$2 == "x-cache" { xc = xc sprintf(" %s:%s", $3, $4) }
END { printf "HTTP status    %s\nX-Cache        %s\n", st, xc }' <(grep '^MIX ' "$out")

echo
echo "== caproxy (admin /metrics)"
awk '
/^caproxy_requests_total\{/ && /route="aht"/ {
	match($0, /outcome="[^"]*"/); o = substr($0, RSTART + 9, RLENGTH - 10)
	n[o] = $NF; total += $NF
}
/^caproxy_coalesced_requests_total / { coalesced = $NF }
/^caproxy_upstream_requests_total\{/ && /route="aht"/ { upstream += $NF }
END {
	line = ""
	for (o in n) line = line sprintf(" %s:%d", o, n[o])
	printf "aht outcomes   %s (total %d)\n", line, total
	if (total > 0) printf "hit ratio       %.1f%% (hit / all AHT requests); %.1f%% served from cache (hit+stale)\n", 100 * n["hit"] / total, 100 * (n["hit"] + n["stale"]) / total
	printf "upstream AHT    %d calls; %d requests coalesced onto another'"'"'s call\n", upstream, coalesced
}' "$tmp/metrics.txt"

if [[ -s $tmp/caproxy.log ]]; then
	echo
	echo "== caproxy log (level warn and above), by message"
	grep -o 'level=[A-Z]* msg=\("[^"]*"\|[^ ]*\)' "$tmp/caproxy.log" | sort | uniq -c | sort -rn | head -n 10
fi

echo
echo "== upstream (simulator /sim/stats)"
admitted=$(stat AHTAdmitted)
limited=$(stat AHTLimited)
violations=$(stat LimitViolations)
max_in_window=$(stat MaxArrivalsInWindow)
tokens=$(stat TokenGenerations)
echo "AHTAdmitted ${admitted:-?}  AHTLimited ${limited:-?}  LimitViolations ${violations:-?}  MaxArrivalsInWindow ${max_in_window:-?}  TokenGenerations ${tokens:-?}"

[[ -n $limited && -n $violations && -n $max_in_window ]] || {
	cat "$tmp/stats.json" >&2
	die "could not read AHTLimited/LimitViolations/MaxArrivalsInWindow from /sim/stats"
}
if ((limited != 0 || violations != 0 || max_in_window > 50)); then
	show_log caproxy
	die "upstream limit broken: AHTLimited=$limited, LimitViolations=$violations (want 0), MaxArrivalsInWindow=$max_in_window (want <= 50)"
fi
grep -q '^MIX status 200 ' "$out" || die "no request was answered 200"
echo "OK: the simulator refused no call for the limit and never saw more than 50 calls per account in a window"
