# shellcheck shell=bash
# lib.sh — helpers shared by bench-hit.sh and load.sh. Sourced, not run.
#
# Sourcing it makes a temp dir ($tmp) and installs traps so that, however
# the script ends (success, failure, Ctrl-C, SIGTERM), every process started
# with start_bg or run_bg is killed by its PID and $tmp is removed.

# children are the PIDs this script started; cleanup ends exactly these.
children=()
tmp=$(mktemp -d "${TMPDIR:-/tmp}/caproxy-scripts.XXXXXX")

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	local pid
	for pid in ${children[@]+"${children[@]}"}; do
		kill -TERM "$pid" 2>/dev/null
	done
	# Servers drain in-flight requests on SIGTERM; give them 5 s, then KILL.
	local deadline=$((SECONDS + 5))
	for pid in ${children[@]+"${children[@]}"}; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "$(basename "$0"): interrupted; stopping what it started" >&2; exit 130' INT
trap 'echo "$(basename "$0"): terminated; stopping what it started" >&2; exit 143' TERM

die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}

need() {
	local cmd
	for cmd in "$@"; do
		command -v "$cmd" >/dev/null 2>&1 || die "needs $cmd on PATH"
	done
}

# free_ports N prints N distinct free loopback TCP ports, one a line. The
# sockets are held open together so the ports differ from each other.
free_ports() {
	if command -v python3 >/dev/null 2>&1; then
		python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
		return
	fi
	# Without python3: random high ports nobody answers on.
	local n=0 p seen=" "
	while ((n < $1)); do
		p=$((20000 + RANDOM % 30000))
		[[ $seen == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			seen+="$p "
			n=$((n + 1))
		fi
	done
}

# seconds_of DURATION turns wrk's 20s / 2m / 20 into whole seconds.
seconds_of() {
	case $1 in
	*s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;;
	*h) echo $((${1%h} * 3600)) ;;
	*) echo "$1" ;;
	esac
}

# start_bg NAME CMD... runs CMD in the background with its output in
# $tmp/NAME.log and remembers its PID in the variable NAME_pid.
start_bg() {
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	children+=($!)
	printf -v "${name}_pid" '%s' "$!"
}

# run_bg SECONDS OUT CMD... runs CMD bounded by SECONDS with its output in
# OUT, and waits for it. Running it in the background keeps the script's
# traps responsive while it runs.
run_bg() {
	local limit=$1 out=$2
	shift 2
	timeout -k 5 "$limit" "$@" >"$out" 2>&1 &
	local pid=$!
	children+=("$pid")
	wait "$pid"
}

# show_log NAME prints the end of a process's log, for failures.
show_log() {
	if [[ -s $tmp/$1.log ]]; then
		echo "--- last lines of $1's log:" >&2
		tail -n 20 "$tmp/$1.log" >&2
	fi
}

# wait_ready NAME URL SECONDS waits until URL answers 2xx, failing early if
# the process NAME (started with start_bg) has exited.
wait_ready() {
	local name=$1 url=$2 deadline=$((SECONDS + $3)) pidvar="${1}_pid"
	until curl -fsS --max-time 1 -o /dev/null "$url" 2>/dev/null; do
		if ! kill -0 "${!pidvar}" 2>/dev/null; then
			show_log "$name"
			die "$name exited before $url was ready"
		fi
		if ((SECONDS >= deadline)); then
			show_log "$name"
			die "$name: $url not ready after $3 s"
		fi
		sleep 0.1
	done
}

# build_caproxy builds the proxy from the repo root into $tmp/caproxy.
build_caproxy() {
	timeout 600 go build -o "$tmp/caproxy" . || die "go build failed"
}
