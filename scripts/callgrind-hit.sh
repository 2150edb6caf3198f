#!/usr/bin/env bash
# callgrind-hit.sh — instructions per cache hit, noise-free: caproxy runs
# under valgrind's callgrind, which counts the instructions it executes
# (user space; the kernel's socket work is not counted) whatever else the
# machine is doing. After one miss and 200 warm-up hits the counters are
# zeroed, N hits are sent from 8 keep-alive connections
# (scripts/hitcount), and the counters dumped. Targets, each ROUNDS times:
#
#   caproxy      the tree as built
#   gogc100      the same binary with GOGC=100: gcheadroom off (Go's default)
#   nodeadline   built with serve.go's deadline.Listener left out: net/http's
#                own deadline timers
#
# It prints instructions per hit and the GC cycles during the N hits.
# Under callgrind a hit takes ~50× its real time, so the time-driven work
# (gcheadroom's 1 s poll, the deadline sweeper's 250 ms tick) weighs ~50×
# more per hit than in real use: it counts against both.
#
#   N=30000 ROUNDS=2 scripts/callgrind-hit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
trap cleanup EXIT INT TERM
need go curl valgrind callgrind_control python3

N=${N:-30000}
ROUNDS=${ROUNDS:-2}

build_caproxy
go build -o "$tmp/hitcount" ./scripts/hitcount || die "go build hitcount failed"
# The variant without the sweeping listener: a copy of the tree with that
# one line of serve.go changed.
mkdir "$tmp/src"
git ls-files -z | xargs -0 cp --parents -t "$tmp/src"
grep -q 'ln := deadline.NewListener(tcpLn, deadlineTick)' "$tmp/src/serve.go" ||
	die "serve.go no longer wraps the listener as this script expects"
sed -i 's/ln := deadline.NewListener(tcpLn, deadlineTick)/ln, _ := tcpLn, deadline.NewListener/' "$tmp/src/serve.go"
(cd "$tmp/src" && go build -o "$tmp/caproxy-nodeadline" .) || die "go build of the variant failed"

read -r port admin < <(free_ports 2 | paste -sd' ')
cat >"$tmp/caproxy.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin
upstream:
  url: builtin:sim
accounts:
  - user_name: demo
    api_key: demo-key
    auth: apikey
cache:
  ttl: 1h
client_auth: required
log:
  level: info
  access: false
YAML

gc_count() { curl -fsS "http://127.0.0.1:$admin/metrics" | awk '/^go_gc_duration_seconds_count/{print $2}'; }

# measure NAME BIN [ENV...] sets ir (instructions per hit) and gc (GC
# cycles during the hits).
measure() {
	local name=$1 bin=$2
	shift 2
	local out="$tmp/$name.cg"
	rm -f "$out"*
	# Asynchronous preemption's signals trip callgrind up; GODEBUG turns
	# them off for every target alike.
	start_bg "$name" env GODEBUG=asyncpreemptoff=1 "$@" valgrind --tool=callgrind \
		--callgrind-out-file="$out" "$bin" -config "$tmp/caproxy.yaml"
	local pidvar="${name}_pid"
	wait_ready "$name" "http://127.0.0.1:$admin/healthz" 120
	curl -fsS -o /dev/null -X POST "http://127.0.0.1:$port/ca_apis/aht" -H 'apiKey: demo-key' \
		-d '{"userName":"demo","agentId":"agent001"}' || die "$name: the first miss failed"
	"$tmp/hitcount" -url "http://127.0.0.1:$port/ca_apis/aht" -n 200 || die "$name: warm-up failed"
	local gc0
	gc0=$(gc_count)
	callgrind_control -z "${!pidvar}" >/dev/null 2>&1
	"$tmp/hitcount" -url "http://127.0.0.1:$port/ca_apis/aht" -n "$N" || die "$name: hits failed"
	callgrind_control -d "${!pidvar}" >/dev/null 2>&1
	local gc1 total
	gc1=$(gc_count)
	# callgrind cannot take the SIGTERM of a drain; its counts are dumped.
	kill -KILL "${!pidvar}"
	wait "${!pidvar}" 2>/dev/null || true
	total=$(grep -h '^summary:' "$(ls -t "$out".* | head -1)" | awk '{print $2}')
	ir=$((total / N)) gc=$((gc1 - gc0))
}

printf '%-12s %14s %10s\n' target instr/hit "GC cycles"
for round in $(seq "$ROUNDS"); do
	for t in caproxy gogc100 nodeadline; do
		case $t in
		caproxy) measure "$t$round" "$tmp/caproxy" ;;
		gogc100) measure "$t$round" "$tmp/caproxy" GOGC=100 ;;
		nodeadline) measure "$t$round" "$tmp/caproxy-nodeadline" ;;
		esac
		printf '%-12s %14s %10s\n' "$t" "$ir" "$gc"
	done
done
echo "($N hits per target and round, 8 connections)"
