# What bench/backend.sh, bench/gateway.sh and bench/cluster.sh share: tools, the
# binary, scratch space, starting the backend, the gateway and nginx, wrk runs,
# CPU accounting and summary helpers.
# Sourced, not run; the scripts set `set -euo pipefail` and their knobs.
# shellcheck shell=bash

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
LUA_DIR="$BENCH_DIR/wrk"
CLK_TCK=$(getconf CLK_TCK)
NEED_PACKAGES=() # filled by need_tools, installed by install_needed_packages
SERVER_PIDS=()   # every server started, stopped in reverse order at exit
FAILED=0         # 1 once a run saw a non-200 answer or a socket error

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------

# Queues the package of each command missing from PATH (named as the command).
need_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || NEED_PACKAGES+=("$tool")
  done
}

# Installs the queued packages with apt-get (through sudo unless root).
install_needed_packages() {
  ((${#NEED_PACKAGES[@]})) || return 0
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  log "installing ${NEED_PACKAGES[*]} with apt-get"
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y "${NEED_PACKAGES[@]}"
}

# --- binary -------------------------------------------------------------------

# Sets BIN and BUILT_FROM: DESKBRIDGE_BIN as is, else a build of REV, else of the working tree.
build_binary() {
  local commit src
  if [[ -n ${DESKBRIDGE_BIN:-} ]]; then
    BIN=$DESKBRIDGE_BIN
    BUILT_FROM="binary $BIN"
  elif [[ -n ${REV:-} ]]; then
    commit=$(git -C "$REPO" rev-parse --verify "$REV^{commit}")
    src="$REPO/target/bench-src/$commit"
    if [[ ! -f $src/Cargo.toml ]]; then
      mkdir -p "$src"
      # -m: files take the time of extraction. With the commit's time, older
      # than artifacts already in the shared target dir, cargo would take a
      # binary built from another commit as up to date.
      git -C "$REPO" archive "$commit" | tar -x -m -C "$src"
    fi
    log "building commit ${commit:0:7} (cargo build --release -p deskbridge in $src)"
    (cd "$src" && CARGO_TARGET_DIR="$REPO/target/bench" cargo build --release -p deskbridge)
    BIN="$REPO/target/bench/release/deskbridge"
    BUILT_FROM="commit ${commit:0:7}"
  else
    log "building the release binary (cargo build --release -p deskbridge)"
    (cd "$REPO" && cargo build --release -p deskbridge)
    BIN="$REPO/target/release/deskbridge"
    BUILT_FROM="working tree at commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if ! git -C "$REPO" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null; then
      BUILT_FROM+=" with uncommitted changes in crates/"
    fi
  fi
  [[ -x $BIN ]] || die "no executable at $BIN"
}

# --- scratch space and cleanup ------------------------------------------------

# Creates WORK (mktemp template $1) and RESULTS_DIR (default bench/results/$2-<UTC time>).
make_dirs() { # mktemp template, results name
  WORK=$(mktemp -d -t "$1")
  RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/$2-$(date -u +%Y%m%dT%H%M%SZ)}
  mkdir -p "$RESULTS_DIR"
}

# Sends TERM to a process, if it still runs, and waits for it.
stop() { # pid
  if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

# EXIT trap: stops the servers, last started first, and removes WORK.
cleanup() {
  local i
  for ((i = ${#SERVER_PIDS[@]} - 1; i >= 0; i--)); do stop "${SERVER_PIDS[i]}"; done
  rm -rf "$WORK"
}

# --- servers ------------------------------------------------------------------

# Prints the URL a process logs after "prefix", waiting up to 30 s; dies if it exits.
wait_for_url() { # pid, stdout file, stderr file, pattern prefix, name
  local pid=$1 out=$2 err=$3 prefix=$4 name=$5 url=""
  for _ in $(seq 1 300); do
    url=$(sed -n "s|^$prefix \(https\{0,1\}://[^ ]*\).*|\1|p" "$out")
    [[ -n $url ]] && { echo "$url"; return; }
    kill -0 "$pid" 2>/dev/null || die "the $name exited: $(cat "$err")"
    sleep 0.1
  done
  die "the $name did not print its address within 30 s"
}

# Starts `$BIN ARGS...` (DESKBRIDGE_LOG=warn) and waits for its address: sets SERVER_PID, SERVER_URL.
start_server() { # name, stdout file, stderr file, pattern prefix, deskbridge args...
  local name=$1 out=$2 err=$3 prefix=$4
  shift 4
  DESKBRIDGE_LOG=warn "$BIN" "$@" >"$out" 2>"$err" &
  SERVER_PID=$!
  SERVER_PIDS+=("$SERVER_PID")
  SERVER_URL=$(wait_for_url "$SERVER_PID" "$out" "$err" "$prefix" "$name")
  log "$name pid $SERVER_PID at $SERVER_URL"
}

# Seeds the demo data into a new data dir; sets USERNAME, PASSWORD, CLIENT_ID, CLIENT_SECRET, API_KEY.
# shellcheck disable=SC2034 # API_KEY is for the sourcing script
seed_demo_data() { # data dir
  log "seeding demo data in $1"
  "$BIN" backend --data-dir "$1" seed-demo --json >"$WORK/seed.json"
  USERNAME=$(jq -er '.users[0].username' "$WORK/seed.json")
  PASSWORD=$(jq -er '.users[0].password' "$WORK/seed.json")
  CLIENT_ID=$(jq -er '.clients[0].client_id' "$WORK/seed.json")
  CLIENT_SECRET=$(jq -er '.clients[0].client_secret' "$WORK/seed.json")
  API_KEY=$(jq -er '[.api_keys[] | select(.apis | index("getprofile"))][0].key' "$WORK/seed.json")
}

# Gets credentials from the backend at $1: sets BASIC, ACCESS_TOKEN and the customer's JWT.
# shellcheck disable=SC2034 # ACCESS_TOKEN and JWT are for the sourcing script
get_backend_credentials() { # backend URL
  # RFC 6749 §2.3.1: id and secret are form-encoded before base64 (demo values
  # need no escaping, which jq's @uri would otherwise provide).
  BASIC=$(printf '%s:%s' "$(jq -rn --arg v "$CLIENT_ID" '$v|@uri')" "$(jq -rn --arg v "$CLIENT_SECRET" '$v|@uri')" | base64 -w0)
  ACCESS_TOKEN=$(curl -sS --fail-with-body -X POST "$1/access_token" \
    -H "Authorization: Basic $BASIC" \
    -H 'Content-Type: application/x-www-form-urlencoded' \
    --data 'grant_type=client_credentials' | jq -er .access_token) || die "could not get an access token"
  JWT=$(curl -sS --fail-with-body -X POST "$1/customer_authenticate" \
    --data-urlencode "username=$USERNAME" --data-urlencode "password=$PASSWORD" | jq -er .JWT) \
    || die "could not log the customer in"
}

# Dies unless the curl request answers 200; the body stays in $WORK/check.body.
expect_200() { # name, curl args...
  local name=$1 status
  shift
  status=$(curl -sS -o "$WORK/check.body" -w '%{http_code}' "$@")
  [[ $status == 200 ]] || die "$name answered $status: $(cat "$WORK/check.body")"
}

# --- the gateway --------------------------------------------------------------

# Prints a gateway config for the backend at BACKEND_URL (connection "acme",
# action getprofile, channel "web"), with its data dir at $1; the secrets come
# from BENCH_CLIENT_SECRET, BENCH_GATEWAY_API_KEY and BENCH_APP_KEY. Any further
# TOML ($2, e.g. [store] and [cluster]) goes at the end.
gateway_config() { # data dir, extra TOML
  # The backend's issuer is its public URL (no `issuer` in its config here).
  cat <<EOF
[server]
data_dir = "$1"
[[connections]]
name = "acme"
base_url = "$BACKEND_URL"
timeout_ms = 2000
customer_login_url = "$BACKEND_URL/customer_authenticate"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "$BACKEND_URL/access_token"
client_id = "$CLIENT_ID"
client_secret = { env = "BENCH_CLIENT_SECRET" }
scope = "profile:read"
[connections.api_key]
value = { env = "BENCH_GATEWAY_API_KEY" }
[connections.identity]
mode = "jwt"
jwks_url = "$BACKEND_URL/.well-known/jwks.json"
issuer = "$BACKEND_URL"
audience = "deskbridge"
[[connections.actions]]
name = "getprofile"
path = "/getprofile"
[[channels]]
name = "web"
app_key = { env = "BENCH_APP_KEY" }
# One agent token carries all of wrk's load, and one client address opens
# every session: far above any agent's or address's default rate.
[limits]
agent_per_second = 10000000
agent_burst = 10000000
session_per_second = 10000000
session_burst = 10000000
${2:-}
EOF
}

# Adds agent "bench" to a gateway's config (unless ADD_AGENT=0: an agent in a
# shared store is added once) and starts that gateway with $BIN: sets AGENT
# (its token, when added), SERVER_PID and SERVER_URL. GATEWAY_WORKERS sets its
# tokio worker threads, PROXY_CPUS where it runs.
start_gateway() { # name, config
  if [[ ${ADD_AGENT:-1} != 0 ]]; then
    AGENT=$(DESKBRIDGE_LOG=warn "$BIN" agent add bench --role agent --config "$2") \
      || die "deskbridge agent add failed ($1)"
  fi
  # For the gateway alone: the backend is already running. (tokio refuses an
  # empty value, so the variable is set only when asked for.)
  [[ -z ${GATEWAY_WORKERS:-} ]] || export TOKIO_WORKER_THREADS=$GATEWAY_WORKERS
  start_server "$1" "$WORK/$1.out" "$RESULTS_DIR/$1.stderr" "deskbridge gateway listening on" \
    serve --config "$2" --listen 127.0.0.1:0
  unset TOKIO_WORKER_THREADS
  pin "${PROXY_CPUS:-}" "$SERVER_PID"
}

# Opens a web session with the customer's JWT on the gateway at $1; prints its conversation.
open_conversation() { # gateway URL
  curl -sS --fail-with-body -X POST "$1/v1/sessions" \
    -H "x-deskbridge-app-key: $APP_KEY" -H 'Content-Type: application/json' \
    --data "$(jq -cn --arg t "$JWT" '{channel: "web", connection: "acme", auth: {token: $t}}')" \
    | jq -er .conversation_id
}

# --- nginx --------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Checks and starts nginx with DIR/nginx.conf (listening on PORT), waits until
# it answers: sets NGINX_PID and NGINX_URL. NGINX is its executable.
start_nginx() { # dir, port
  local dir=$1
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -t -q \
    || die "nginx rejects the configuration: $(cat "$dir/error.log")"
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' \
    >"$RESULTS_DIR/nginx.stdout" 2>&1 &
  NGINX_PID=$!
  SERVER_PIDS+=("$NGINX_PID")
  NGINX_URL="http://127.0.0.1:$2"
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$NGINX_URL/" && break
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$dir/error.log")"
    sleep 0.1
  done
  log "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') pid $NGINX_PID at $NGINX_URL"
}

# --- runs and CPU accounting --------------------------------------------------

# The sum over the given processes of an awk expression of their
# /proc/PID/stat fields: clock ticks so far.
stat_ticks() { # awk expression, pids...
  local expr=$1 pid total=0
  shift
  for pid in "$@"; do total=$((total + $(awk "{ print $expr }" "/proc/$pid/stat"))); done
  echo "$total"
}
# CPU time (user+system) of the given processes so far.
ticks() { stat_ticks '$14 + $15' "$@"; }
# The user-space part of it (the rest is the kernel's).
user_ticks() { stat_ticks '$14' "$@"; }

# Whole-machine CPU ticks: "busy idle" (idle includes iowait).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }

# A line of /proc/PID/status, in KiB (VmRSS, VmHWM).
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# Keeps every thread of each PID on the CPUs in $1 (a taskset list; empty:
# anywhere). Threads started later inherit it from the thread that starts them.
pin() { # cpus, pids...
  local cpus=$1 pid
  shift
  [[ -n $cpus ]] || return 0
  for pid in "$@"; do
    taskset -a -p -c "$cpus" "$pid" >/dev/null || die "taskset could not pin pid $pid to CPUs $cpus"
  done
}

# Runs wrk with a Lua script from bench/wrk; its output goes to $6, its own CPU seconds to $6.cpu.
# On the CPUs in WRK_CPUS, when set.
run_wrk() { # threads, connections, script, url, duration, output file
  local TIMEFORMAT='%U %S' status=0 on_cpus=()
  [[ -z ${WRK_CPUS:-} ]] || on_cpus=(taskset -c "$WRK_CPUS")
  { time "${on_cpus[@]}" wrk -t"$1" -c"$2" -d"$5" --latency -s "$LUA_DIR/$3" "$4" >"$6" 2>&1; } 2>"$6.cpu" || status=$?
  ((status == 0)) || { cat "$6" >&2; die "wrk failed (see above)"; }
}

# Writes $1.bench: wrk's BENCH line, CPU seconds of each NAME (NAME_cpu_s), wrk,
# other processes and idle, then the extra fields; logs it and sets FAILED on bad answers.
account_run() { # wrk output file, busy ticks, idle ticks, extra fields, NAME=ticks...
  local out=$1 busy=$2 idle=$3 extra=$4 line
  shift 4
  line=$(grep '^BENCH requests=' "$out") || die "no BENCH line in $out"
  awk -v line="$line" -v h="$CLK_TCK" -v busy="$busy" -v idle="$idle" -v extra="$extra" -v procs="$*" \
      '{ wrk = $1 + $2 } END {
         n = split(procs, p, " "); fields = ""; measured = 0
         for (i = 1; i <= n; i++) {
           split(p[i], kv, "="); measured += kv[2]
           fields = fields sprintf(" %s_cpu_s=%.2f", kv[1], kv[2] / h)
         }
         other = busy / h - measured / h - wrk; if (other < 0) other = 0
         printf "%s%s wrk_cpu_s=%.2f other_cpu_s=%.2f idle_cpu_s=%.2f%s\n",
           line, fields, wrk, other, idle / h, extra }' "$out.cpu" >"$out.bench"
  log "  $(sed 's/^BENCH //' "$out.bench")"
  if grep -q '^BENCH non-200\|^BENCH first\|^BENCH socket' "$out"; then
    grep '^BENCH non-200\|^BENCH first\|^BENCH socket' "$out" >&2
    FAILED=1
  fi
}

# --- summary ------------------------------------------------------------------

# The value of "NAME=" on each input line.
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# One value of a field per run, from $RESULTS_DIR/<prefix>-run<N>.txt.bench.
values() { # run file prefix, field
  local round
  for round in $(seq 1 "$RUNS"); do field "$2" <"$RESULTS_DIR/$1-run$round.txt.bench"; done
}
# Field $2 divided by field $3, one value per run.
per_run_ratio() { # run file prefix, numerator field, denominator field
  local round
  for round in $(seq 1 "$RUNS"); do
    awk -v a="$2" -v b="$3" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
         END { print v[a] / v[b] }' "$RESULTS_DIR/$1-run$round.txt.bench"
  done
}
# CPU µs per request of a *_cpu_s field, one value per run.
per_request() { per_run_ratio "$1" "$2" requests | awk '{ printf "%.1f\n", $1 * 1e6 }'; }
# Each run's req/s, rounded, joined with " / ".
per_run() { awk '{ printf "%s%.0f", (NR > 1 ? " / " : ""), $1 }'; }
# Sum of the numbers on stdin, one decimal.
total() { awk '{ s += $1 } END { printf "%.1f", s }'; }
# Sum of the numbers on stdin, as awk prints it (0 for none).
sum_field() { awk '{ s += $1 } END { print s + 0 }'; }
# Microseconds as "x.xx ms".
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
# The CPU model, from lscpu.
cpu_model() { lscpu | sed -n 's/^Model name: *//p' | head -1; }
# wrk's version.
wrk_version() { wrk -v 2>&1 | sed -n 's/^wrk \([^ ]*\).*/\1/p' | head -1; }

# Prints summary.md and where the raw output is; fails if any answer was bad.
finish() {
  echo
  cat "$RESULTS_DIR/summary.md"
  echo
  log "raw wrk output: $RESULTS_DIR"
  if ((FAILED)); then
    die "some responses were not 200 or sockets failed; these numbers are not valid"
  fi
}
