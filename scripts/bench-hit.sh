#!/usr/bin/env bash
# bench-hit.sh — how close is caproxy's cache hit to a bare Go handler?
#
# Builds caproxy and scripts/bare (a net/http handler that reads the body and
# writes a fixed AHT-sized JSON reply), starts both on loopback, warms
# caproxy's cache with one AHT answer (the built-in simulator is the
# upstream), then runs the same wrk load against each, alternating
# bare, caproxy, bare, caproxy so drift between runs shows. Prints
# requests/s and p50/p99 latency per run and the caproxy/bare ratios.
#
#   scripts/bench-hit.sh                        (or: make bench-hit)
#   DURATION=30s CONNS=128 THREADS=2 ROUNDS=3 LOG_LEVEL=info scripts/bench-hit.sh
#
# Knobs: DURATION (10s per run), CONNS (64), THREADS (2), ROUNDS (2 pairs).
# wrk and the servers share the machine's cores; nothing is pinned, which
# costs both targets alike. Fails if caproxy answered anything but 200 HIT.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
# LOG_LEVEL=info keeps caproxy's access log on (one line per request, to
# $tmp); the default, warn, measures the hit path alone.
LOG_LEVEL=${LOG_LEVEL:-warn}
need go wrk curl

secs=$(seconds_of "$DURATION")
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || die "DURATION must look like 10s, 2m or 10 (got $DURATION)"

echo "building caproxy and the bare handler"
build_caproxy
timeout 300 go build -o "$tmp/bare" ./scripts/bare || die "building scripts/bare failed"

{ read -r proxy_port; read -r admin_port; read -r bare_port; } < <(free_ports 3)

# The cache TTL outlasts the whole benchmark so every measured request is
# a hit; the upstream is the in-process simulator.
cat >"$tmp/config.yaml" <<YAML
listen: 127.0.0.1:$proxy_port
admin_listen: 127.0.0.1:$admin_port
upstream:
  url: builtin:sim
accounts:
  - user_name: demo
    api_key: demo-key
    auth: token
cache:
  ttl: 1h
client_auth: required
log:
  level: $LOG_LEVEL
YAML
"$tmp/caproxy" -config "$tmp/config.yaml" -check >/dev/null 2>"$tmp/check.log" || {
	cat "$tmp/check.log" >&2
	die "caproxy refused the generated config"
}

start_bg caproxy "$tmp/caproxy" -config "$tmp/config.yaml"
start_bg bare "$tmp/bare" -listen "127.0.0.1:$bare_port"
wait_ready caproxy "http://127.0.0.1:$admin_port/readyz" 20
wait_ready bare "http://127.0.0.1:$bare_port/" 20

proxy_url="http://127.0.0.1:$proxy_port/ca_apis/aht"
bare_url="http://127.0.0.1:$bare_port/ca_apis/aht"
body='{"userName":"demo","agentId":"agent001"}'

# ask prints the status line's code and the X-Cache header of one AHT call.
ask() {
	curl -sS --max-time 10 -o "$tmp/answer.json" -D "$tmp/headers.txt" \
		-H 'Content-Type: application/json' -H 'apiKey: demo-key' -d "$body" "$proxy_url" ||
		die "caproxy did not answer $proxy_url"
	local code xcache
	code=$(awk 'NR==1 {print $2}' "$tmp/headers.txt")
	xcache=$(awk -F': *' 'tolower($1)=="x-cache" {gsub("\r",""); print $2}' "$tmp/headers.txt")
	echo "$code ${xcache:-none}"
}
first=$(ask)
second=$(ask)
echo "warm-up: first answer $first, second answer $second: $(cat "$tmp/answer.json")"
if [[ $second != "200 HIT" ]]; then
	show_log caproxy
	die "expected the second answer to be '200 HIT', got '$second'"
fi

# bench NAME URL runs one wrk load and appends "NAME key=value..." to
# $tmp/results.
bench() {
	local name=$1 url=$2 out="$tmp/wrk-$1-$run.txt"
	if ! run_bg $((secs + 30)) "$out" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 5s \
		-s scripts/hit.lua "$url"; then
		cat "$out" >&2
		die "wrk against $name failed"
	fi
	local line
	line=$(grep '^RESULT ' "$out") || {
		cat "$out" >&2
		die "wrk against $name printed no RESULT line"
	}
	echo "$name ${line#RESULT }" >>"$tmp/results"
	printf '  run %d %-8s %s\n' "$run" "$name" "${line#RESULT }"
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds of bare then caproxy"
# Other work on the machine skews both targets; the load average says how much.
echo "cores: $(nproc 2>/dev/null || echo ?), load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?)"
: >"$tmp/results"
for ((run = 1; run <= ROUNDS; run++)); do
	bench bare "$bare_url"
	bench caproxy "$proxy_url"
done

echo
awk -v conns="$CONNS" -v threads="$THREADS" -v dur="$DURATION" '
function val(key,   i, kv) {
	for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) return kv[2] }
	return ""
}
{
	n[$1]++; run = n[$1]
	rps = val("rps"); sum[$1] += rps
	if (rps > best[$1]) best[$1] = rps
	printf "| %-7s | %3d | %10.0f | %8.3f | %8.3f | %6d |\n", $1, run, rps, val("p50_ms"), val("p99_ms"), val("non200") + val("socket_errors")
}
BEGIN {
	printf "wrk -t%s -c%s -d%s, same request and load for both targets\n\n", threads, conns, dur
	printf "| target  | run |  requests/s | p50 (ms) | p99 (ms) | errors |\n"
	printf "|---------|-----|-------------|----------|----------|--------|\n"
}
END {
	printf "\ncaproxy/bare requests/s: best %.2f, mean %.2f\n", best["caproxy"] / best["bare"], (sum["caproxy"] / n["caproxy"]) / (sum["bare"] / n["bare"])
}' "$tmp/results"

# A fast wrong answer is no result: every caproxy response must be 200 HIT.
bad=$(awk '$1 == "caproxy" {
	for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "non200" || kv[1] == "nothit") s += kv[2] }
} END { print s + 0 }' "$tmp/results")
if ((bad > 0)); then
	show_log caproxy
	die "caproxy gave $bad answers that were not 200 HIT"
fi
