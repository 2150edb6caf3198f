#!/usr/bin/env bash
# bench-nginx.sh — caproxy's cache hit against nginx proxy_cache and a bare
# Go handler, in one run, under the same wrk load, with and without access
# logs.
#
#   scripts/bench-nginx.sh                      (or: make bench-nginx)
#   ROUNDS=5 DURATION=10s CONNS=64 THREADS=2 scripts/bench-nginx.sh
#
# Targets, all on loopback, all asked the same cached AHT question (the
# simulator's apikey account demo-basic, agent001):
#
#   bare           scripts/bare: reads the body, writes a fixed AHT-sized
#                  answer; no log
#   caproxy        log.access: false
#   caproxy+log    log.access: true, level info (its default), to a file
#   nginx          2 workers, proxy_cache keyed on $request_uri|$request_body
#                  (POST cached, proxy_cache_lock on, keepalive upstream),
#                  access_log off
#   nginx+log      the same with access_log combined, to a file
#
# The upstream of both caches is `caproxy sim`; each cache is warmed with
# one miss before the runs. Each round runs every target once (DURATION
# each); the table gives the median over ROUNDS of requests/s, p50 and p99,
# and the ratios are medians of the per-round ratios (targets in one round
# saw the same machine). Fails if any target answered anything but 200, or
# if caproxy or nginx answered anything but a cache HIT.
#
# BASE=<git revision> adds a target "base": caproxy built from that
# revision (no access log), run in every round beside this one, for a
# before/after in one run on the same machine load.
#
# Knobs: ROUNDS (3), DURATION (6s), CONNS (64), THREADS (2), BASE. nginx and wrk
# are installed with apt-get when missing. Everything started is stopped
# and $tmp removed when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ROUNDS=${ROUNDS:-3}
BASE=${BASE:-}
DURATION=${DURATION:-6s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}

# install_missing installs nginx and wrk with apt-get when they are not on
# PATH (nginx lives in /usr/sbin, which a non-login PATH may lack).
PATH=$PATH:/usr/sbin:/sbin
install_missing() {
	local pkgs=() cmd
	for cmd in nginx wrk; do
		command -v "$cmd" >/dev/null 2>&1 || pkgs+=("$cmd")
	done
	((${#pkgs[@]} == 0)) && return
	command -v apt-get >/dev/null 2>&1 || die "needs ${pkgs[*]} (no apt-get to install them)"
	echo "installing ${pkgs[*]}"
	timeout 600 apt-get update -qq >/dev/null || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${pkgs[@]}" >/dev/null ||
		die "apt-get install ${pkgs[*]} failed"
}
install_missing
need go wrk curl nginx

secs=$(seconds_of "$DURATION")
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || die "DURATION must look like 6s, 2m or 6 (got $DURATION)"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "ROUNDS must be a positive number (got $ROUNDS)"

echo "building caproxy and the bare handler"
build_caproxy
timeout 300 go build -o "$tmp/bare" ./scripts/bare || die "building scripts/bare failed"
if [[ -n $BASE ]]; then
	echo "building caproxy at $BASE"
	mkdir "$tmp/base-src"
	git archive "$BASE" | tar -x -C "$tmp/base-src" || die "git archive $BASE failed"
	(cd "$tmp/base-src" && timeout 600 go build -o "$tmp/caproxy-base" .) || die "building caproxy at $BASE failed"
fi

{
	read -r sim_port
	read -r cp_port
	read -r cp_admin
	read -r cpl_port
	read -r cpl_admin
	read -r ng_port
	read -r ngl_port
	read -r bare_port
	read -r base_port
	read -r base_admin
} < <(free_ports 10)

export AHT_USER=demo-basic AHT_KEY=demo-basic-key
body="{\"userName\":\"$AHT_USER\",\"agentId\":\"agent001\"}"

# caproxy_config PORT ADMIN ACCESS LEVEL writes a config whose cache TTL
# outlasts the benchmark, so every measured request is a hit.
caproxy_config() {
	cat <<YAML
listen: 127.0.0.1:$1
admin_listen: 127.0.0.1:$2
upstream:
  url: http://127.0.0.1:$sim_port
accounts:
  - user_name: $AHT_USER
    api_key: $AHT_KEY
    auth: apikey
cache:
  ttl: 1h
client_auth: required
log:
  level: $4
  access: $3
YAML
}
# Each caproxy has a directory of its own: a single node keeps its state
# file beside its config, and two processes cannot share one.
mkdir -p "$tmp/cfg-caproxy" "$tmp/cfg-caproxy-base" "$tmp/cfg-caproxy-log"
caproxy_config "$cp_port" "$cp_admin" false info >"$tmp/cfg-caproxy/caproxy.yaml"
caproxy_config "$base_port" "$base_admin" false info >"$tmp/cfg-caproxy-base/caproxy-base.yaml"
caproxy_config "$cpl_port" "$cpl_admin" true info >"$tmp/cfg-caproxy-log/caproxy-log.yaml"
for f in caproxy caproxy-log; do
	"$tmp/caproxy" -config "$tmp/cfg-$f/$f.yaml" -check >/dev/null 2>"$tmp/check.log" || {
		cat "$tmp/check.log" >&2
		die "caproxy refused the generated $f.yaml"
	}
done

# nginx as an operator would set it up to cache this POST API: the key is
# the body, the body is kept in memory (client_body_buffer_size) so
# $request_body is set, concurrent misses wait for one fetch.
mkdir -p "$tmp/nginx/cache"
cat >"$tmp/nginx/nginx.conf" <<NGINX
user root;
worker_processes 2;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
	client_body_temp_path $tmp/nginx/client_body;
	proxy_temp_path $tmp/nginx/proxy;
	fastcgi_temp_path $tmp/nginx/fastcgi;
	uwsgi_temp_path $tmp/nginx/uwsgi;
	scgi_temp_path $tmp/nginx/scgi;
	proxy_cache_path $tmp/nginx/cache levels=1:2 keys_zone=aht:10m max_size=100m inactive=1h;
	upstream sim {
		server 127.0.0.1:$sim_port;
		keepalive 16;
	}
	client_body_buffer_size 64k;
	client_max_body_size 64k;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$ng_port;
		access_log off;
		include $tmp/nginx/location.conf;
	}
	server {
		listen 127.0.0.1:$ngl_port;
		access_log $tmp/nginx/access.log combined;
		include $tmp/nginx/location.conf;
	}
}
NGINX
cat >"$tmp/nginx/location.conf" <<'NGINX'
location / {
	proxy_pass http://sim;
	proxy_http_version 1.1;
	proxy_set_header Connection "";
	proxy_cache aht;
	proxy_cache_methods POST;
	proxy_cache_key "$request_uri|$request_body";
	proxy_cache_valid 200 1h;
	proxy_cache_lock on;
	proxy_ignore_headers Cache-Control Expires Set-Cookie;
	add_header X-Cache $upstream_cache_status;
}
NGINX
nginx -t -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" >"$tmp/nginx-check.log" 2>&1 || {
	cat "$tmp/nginx-check.log" >&2
	die "nginx refused the generated config"
}

start_bg sim "$tmp/caproxy" sim -listen "127.0.0.1:$sim_port"
wait_ready sim "http://127.0.0.1:$sim_port/sim/stats" 20
start_bg caproxy "$tmp/caproxy" -config "$tmp/cfg-caproxy/caproxy.yaml"
start_bg caproxy_log "$tmp/caproxy" -config "$tmp/cfg-caproxy-log/caproxy-log.yaml"
[[ -n $BASE ]] && start_bg base "$tmp/caproxy-base" -config "$tmp/cfg-caproxy-base/caproxy-base.yaml"
start_bg nginx nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf"
start_bg bare "$tmp/bare" -listen "127.0.0.1:$bare_port"
wait_ready caproxy "http://127.0.0.1:$cp_admin/readyz" 20
wait_ready caproxy_log "http://127.0.0.1:$cpl_admin/readyz" 20
[[ -n $BASE ]] && wait_ready base "http://127.0.0.1:$base_admin/readyz" 20
wait_ready bare "http://127.0.0.1:$bare_port/" 20

# Targets in the order each round runs them, and their URLs.
targets=(bare caproxy nginx caproxy+log nginx+log)
[[ -n $BASE ]] && targets=(bare base caproxy nginx caproxy+log nginx+log)
declare -A url=(
	[bare]="http://127.0.0.1:$bare_port/ca_apis/aht"
	[caproxy]="http://127.0.0.1:$cp_port/ca_apis/aht"
	[caproxy+log]="http://127.0.0.1:$cpl_port/ca_apis/aht"
	[base]="http://127.0.0.1:$base_port/ca_apis/aht"
	[nginx]="http://127.0.0.1:$ng_port/ca_apis/aht"
	[nginx+log]="http://127.0.0.1:$ngl_port/ca_apis/aht"
)

# ask URL prints the status code and X-Cache header of one AHT call.
ask() {
	curl -sS --max-time 10 -o "$tmp/answer.json" -D "$tmp/headers.txt" \
		-H 'Content-Type: application/json' -H "apiKey: $AHT_KEY" -d "$body" "$1" 2>/dev/null || {
		echo "none none"
		return
	}
	local code xcache
	code=$(awk 'NR==1 {print $2}' "$tmp/headers.txt")
	xcache=$(awk -F': *' 'tolower($1)=="x-cache" {gsub("\r",""); print $2}' "$tmp/headers.txt")
	echo "$code ${xcache:-none}"
}

# Warm each cache (nginx: one cache behind both servers, but its key holds
# no host, so either warms both; ask each anyway). nginx may take a moment
# to listen.
for t in "${targets[@]}"; do
	[[ $t == bare ]] && continue
	deadline=$((SECONDS + 20))
	until [[ $(ask "${url[$t]}") == "200 HIT" ]]; do
		if ((SECONDS >= deadline)); then
			show_log nginx
			show_log caproxy
			die "$t: no '200 HIT' after warming for 20 s (last: $(ask "${url[$t]}"))"
		fi
		sleep 0.2
	done
done
echo "warm: every cache answers 200 HIT: $(cat "$tmp/answer.json")"

# The server processes of each target, whose CPU time is measured (nginx:
# its master; its workers are found as the master's children).
declare -A pid=(
	[bare]=$bare_pid
	[caproxy]=$caproxy_pid
	[caproxy+log]=$caproxy_log_pid
	[base]=${base_pid:-}
	[nginx]=$nginx_pid
	[nginx+log]=$nginx_pid
)
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)

# cpu_ticks PID prints the user+system CPU time, in clock ticks, of PID and
# its child processes (nginx's workers), from /proc.
cpu_ticks() {
	local p sum=0 stat
	for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
		stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		stat=${stat##*) } # after the command name, which may hold spaces
		read -r -a f <<<"$stat"
		sum=$((sum + f[11] + f[12])) # utime, stime (fields 14 and 15)
	done
	echo "$sum"
}

# bench NAME runs one wrk load and appends "NAME run key=value..." to
# $tmp/results, with the server's CPU time per request (cpu_us: the same
# machine share for every target, so less sensitive to other load than
# requests/s).
bench() {
	local name=$1 out="$tmp/wrk-$1-$run.txt" required=1
	[[ $name == bare ]] && required=0
	local before
	before=$(cpu_ticks "${pid[$name]}")
	if ! HIT_REQUIRED=$required run_bg $((secs + 30)) "$out" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" \
		--timeout 5s -s scripts/hit.lua "${url[$name]}"; then
		cat "$out" >&2
		die "wrk against $name failed"
	fi
	local line
	line=$(grep '^RESULT ' "$out") || {
		cat "$out" >&2
		die "wrk against $name printed no RESULT line"
	}
	local ticks requests cpu
	ticks=$(($(cpu_ticks "${pid[$name]}") - before))
	requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
	cpu=$(awk -v t="$ticks" -v hz="$clk_tck" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
	line="$line cpu_us=$cpu"
	echo "$name $run ${line#RESULT }" >>"$tmp/results"
	printf '  run %d %-12s %s\n' "$run" "$name" "${line#RESULT }"
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION, $ROUNDS rounds of: ${targets[*]}"
echo "cores: $(nproc 2>/dev/null || echo ?), load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?)"
: >"$tmp/results"
for ((run = 1; run <= ROUNDS; run++)); do
	for t in "${targets[@]}"; do
		bench "$t"
	done
done

echo
awk -v conns="$CONNS" -v threads="$THREADS" -v dur="$DURATION" -v rounds="$ROUNDS" -v base="$BASE" '
function val(key,   i, kv) {
	for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) return kv[2] }
	return ""
}
# median of the n values in a[1..n] (sorted in place, insertion sort).
function median(a, n,   i, j, x) {
	for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function med(t, key,   r, a) {
	for (r = 1; r <= rounds; r++) a[r] = v[t, r, key]
	return median(a, rounds)
}
function ratio(x, y, key,   r, a) {
	for (r = 1; r <= rounds; r++) a[r] = v[x, r, key] / v[y, r, key]
	return median(a, rounds)
}
{
	v[$1, $2, "rps"] = val("rps"); v[$1, $2, "p50"] = val("p50_ms"); v[$1, $2, "p99"] = val("p99_ms"); v[$1, $2, "cpu"] = val("cpu_us")
	v[$1, $2, "bad"] = val("non200") + val("nothit") + val("socket_errors")
	if (!($1 in seen)) { seen[$1] = 1; order[++nt] = $1 }
}
END {
	printf "wrk -t%s -c%s -d%s, %d rounds, medians\n\n", threads, conns, dur, rounds
	printf "| target      | requests/s | p50 (ms) | p99 (ms) | server CPU µs/request | bad answers |\n"
	printf "|-------------|------------|----------|----------|-----------------------|-------------|\n"
	for (i = 1; i <= nt; i++) {
		t = order[i]; bad = 0
		for (r = 1; r <= rounds; r++) bad += v[t, r, "bad"]
		printf "| %-11s | %10.0f | %8.2f | %8.2f | %21.1f | %11d |\n", t, med(t, "rps"), med(t, "p50"), med(t, "p99"), med(t, "cpu"), bad
	}
	printf "\nratios (median of per-round ratios)\n"
	printf "  caproxy/nginx     requests/s  no log %.2f   log %.2f\n", ratio("caproxy", "nginx", "rps"), ratio("caproxy+log", "nginx+log", "rps")
	printf "  caproxy/nginx     p99         no log %.2f   log %.2f   (<= 1 is better)\n", ratio("caproxy", "nginx", "p99"), ratio("caproxy+log", "nginx+log", "p99")
	printf "  caproxy/bare      requests/s  no log %.2f   log %.2f\n", ratio("caproxy", "bare", "rps"), ratio("caproxy+log", "bare", "rps")
	printf "  caproxy/nginx     CPU/request no log %.2f   log %.2f   (<= 1 is better)\n", ratio("caproxy", "nginx", "cpu"), ratio("caproxy+log", "nginx+log", "cpu")
	printf "  caproxy/bare      CPU/request no log %.2f   log %.2f\n", ratio("caproxy", "bare", "cpu"), ratio("caproxy+log", "bare", "cpu")
	if (("base", 1, "rps") in v) {
		printf "  caproxy/base      requests/s  %.2f   p99 %.2f   CPU/request %.2f   (base: %s)\n", ratio("caproxy", "base", "rps"), ratio("caproxy", "base", "p99"), ratio("caproxy", "base", "cpu"), base
		printf "  base/nginx        requests/s  %.2f   base/bare requests/s %.2f\n", ratio("base", "nginx", "rps"), ratio("base", "bare", "rps")
	}
}' "$tmp/results"

# A fast wrong answer is no result.
bad=$(awk '{
	for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "non200" || kv[1] == "nothit") s += kv[2] }
} END { print s + 0 }' "$tmp/results")
if ((bad > 0)); then
	show_log caproxy
	show_log nginx
	die "$bad answers were not 200 (and HIT, for caproxy and nginx)"
fi
# The access logs really were written.
[[ -s $tmp/caproxy_log.log ]] || die "caproxy+log wrote no access log"
[[ -s $tmp/nginx/access.log ]] || die "nginx+log wrote no access log"
echo "access log lines: caproxy $(wc -l <"$tmp/caproxy_log.log"), nginx $(wc -l <"$tmp/nginx/access.log")"
