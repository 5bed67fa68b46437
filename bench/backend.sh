#!/usr/bin/env bash
# Load benchmark of the reference backend: /healthz (baseline), /getprofile
# and /access_token under wrk, each run RUNS times, median reported.
#
#   bench/backend.sh                       # defaults: -t2 -c64 -d10s, 3 runs
#   DURATION=30s RUNS=5 bench/backend.sh
#   REV=HEAD bench/backend.sh              # build a commit, not the working tree
#   DESKBRIDGE_BIN=/path/to/deskbridge bench/backend.sh   # skip the build
#
# Environment:
#   THREADS, CONNECTIONS, DURATION   wrk -t/-c/-d            (2, 64, 10s)
#   RUNS                             runs per endpoint        (3)
#   WARMUP                           untimed run per endpoint (3s; 0 for none)
#   RESULTS_DIR                      where raw wrk output and summary.md go
#                                    (default: bench/results/backend-<UTC time>)
#   REV                              build this commit (git archive into
#                                    target/bench-src, own target dir), so the
#                                    numbers belong to a commit even while
#                                    crates/ has uncommitted edits
#   DESKBRIDGE_BIN                   use this binary instead of building
#
# wrk runs on the same machine as the server and competes with it for the
# CPUs: the numbers are "this box, load generator included".
#
# Every response is checked: a run with any non-200 answer or socket error
# makes the script fail (after printing the table), because a benchmark of
# error responses measures nothing.
set -euo pipefail

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-3s}

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
LUA_DIR="$BENCH_DIR/wrk"

# Endpoint name, wrk script, target req/s (0: no target).
ENDPOINTS=(
  "/healthz healthz.lua 0"
  "/getprofile getprofile.lua 10000"
  "/access_token access_token.lua 5000"
)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------

need_packages=()
command -v wrk >/dev/null 2>&1 || need_packages+=(wrk)
command -v jq >/dev/null 2>&1 || need_packages+=(jq)
command -v curl >/dev/null 2>&1 || need_packages+=(curl)
if ((${#need_packages[@]})); then
  SUDO=()
  [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  log "installing ${need_packages[*]} with apt-get"
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y "${need_packages[@]}"
fi

# --- binary -------------------------------------------------------------------

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

# --- scratch space and cleanup ------------------------------------------------

WORK=$(mktemp -d -t deskbridge-bench.XXXXXX)
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/backend-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS_DIR"
SERVER_PID=""

cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- seed and start the backend -----------------------------------------------

DATA="$WORK/data"
log "seeding demo data in $DATA"
"$BIN" backend --data-dir "$DATA" seed-demo --json >"$WORK/seed.json"

USERNAME=$(jq -er '.users[0].username' "$WORK/seed.json")
PASSWORD=$(jq -er '.users[0].password' "$WORK/seed.json")
CLIENT_ID=$(jq -er '.clients[0].client_id' "$WORK/seed.json")
CLIENT_SECRET=$(jq -er '.clients[0].client_secret' "$WORK/seed.json")
API_KEY=$(jq -er '[.api_keys[] | select(.apis | index("getprofile"))][0].key' "$WORK/seed.json")

DESKBRIDGE_LOG=warn "$BIN" backend --data-dir "$DATA" --listen 127.0.0.1:0 \
  >"$WORK/server.out" 2>"$RESULTS_DIR/server.stderr" &
SERVER_PID=$!

BASE=""
for _ in $(seq 1 300); do
  BASE=$(sed -n 's|^deskbridge backend listening on \(http://[^ ]*\).*|\1|p' "$WORK/server.out")
  [[ -n $BASE ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "the backend exited: $(cat "$RESULTS_DIR/server.stderr")"
  sleep 0.1
done
[[ -n $BASE ]] || die "the backend did not print its address within 30 s"
log "backend pid $SERVER_PID at $BASE"

rss_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }
RSS_IDLE=$(rss_kib VmRSS)

# --- credentials, and one checked request per endpoint ------------------------

# RFC 6749 §2.3.1: id and secret are form-encoded before base64 (demo values
# need no escaping, which jq's @uri would otherwise provide).
BASIC=$(printf '%s:%s' "$(jq -rn --arg v "$CLIENT_ID" '$v|@uri')" "$(jq -rn --arg v "$CLIENT_SECRET" '$v|@uri')" | base64 -w0)

ACCESS_TOKEN=$(curl -sS --fail-with-body -X POST "$BASE/access_token" \
  -H "Authorization: Basic $BASIC" \
  -H 'Content-Type: application/x-www-form-urlencoded' \
  --data 'grant_type=client_credentials' | jq -er .access_token) || die "could not get an access token"

JWT=$(curl -sS --fail-with-body -X POST "$BASE/customer_authenticate" \
  --data-urlencode "username=$USERNAME" --data-urlencode "password=$PASSWORD" | jq -er .JWT) \
  || die "could not log the customer in"

expect_200() { # name, curl args...
  local name=$1 status
  shift
  status=$(curl -sS -o "$WORK/check.body" -w '%{http_code}' "$@")
  [[ $status == 200 ]] || die "$name answered $status: $(cat "$WORK/check.body")"
}
expect_200 /healthz "$BASE/healthz"
expect_200 /getprofile -X POST "$BASE/getprofile" \
  -H "Authorization: Bearer $ACCESS_TOKEN" -H "api-key: $API_KEY" -H "customer-auth: JWT $JWT"
expect_200 /access_token -X POST "$BASE/access_token" -H "Authorization: Basic $BASIC" \
  -H 'Content-Type: application/x-www-form-urlencoded' --data 'grant_type=client_credentials'
log "credentials obtained; every endpoint answers 200"

export BENCH_ACCESS_TOKEN=$ACCESS_TOKEN BENCH_API_KEY=$API_KEY BENCH_JWT=$JWT BENCH_BASIC=$BASIC

# --- runs ---------------------------------------------------------------------

# Server CPU time (user+system, clock ticks) so far.
server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# Whole-machine CPU ticks: "busy idle" (idle includes iowait).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }

run_wrk() { # script, duration, output file; wrk's own CPU seconds go to $3.cpu
  local TIMEFORMAT='%U %S' status=0
  { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --latency -s "$LUA_DIR/$1" "$BASE" >"$3" 2>&1; } 2>"$3.cpu" || status=$?
  ((status == 0)) || { cat "$3" >&2; die "wrk failed (see above)"; }
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $WARMUP != 0 ]]; then
  for entry in "${ENDPOINTS[@]}"; do
    read -r path script _ <<<"$entry"
    log "warm-up $path ($WARMUP)"
    run_wrk "$script" "$WARMUP" "$RESULTS_DIR/warmup-${script%.lua}.txt"
  done
fi

# Rounds interleave the endpoints, so slow drift of the machine (other
# tenants, thermal) spreads over all of them instead of biasing one.
FAILED=0
for round in $(seq 1 "$RUNS"); do
  for entry in "${ENDPOINTS[@]}"; do
    read -r path script _ <<<"$entry"
    out="$RESULTS_DIR/${script%.lua}-run$round.txt"
    log "round $round/$RUNS: $path (wrk -t$THREADS -c$CONNECTIONS -d$DURATION)"
    server_before=$(server_ticks)
    read -r busy_before idle_before < <(machine_ticks)
    run_wrk "$script" "$DURATION" "$out"
    read -r busy_after idle_after < <(machine_ticks)
    server_after=$(server_ticks)
    line=$(grep '^BENCH requests=' "$out") || die "no BENCH line in $out"
    # CPU seconds during the run: the server, wrk, everything else, and idle.
    awk -v line="$line" -v h="$CLK_TCK" -v server=$((server_after - server_before)) \
        -v busy=$((busy_after - busy_before)) -v idle=$((idle_after - idle_before)) \
        '{ wrk = $1 + $2 } END {
           other = busy / h - server / h - wrk; if (other < 0) other = 0
           printf "%s server_cpu_s=%.2f wrk_cpu_s=%.2f other_cpu_s=%.2f idle_cpu_s=%.2f\n",
             line, server / h, wrk, other, idle / h }' "$out.cpu" >"$out.bench"
    log "  $(sed 's/^BENCH //' "$out.bench")"
    if grep -q '^BENCH non-200\|^BENCH first\|^BENCH socket' "$out"; then
      grep '^BENCH non-200\|^BENCH first\|^BENCH socket' "$out" >&2
      FAILED=1
    fi
  done
done

RSS_PEAK=$(rss_kib VmHWM)
RSS_END=$(rss_kib VmRSS)

# --- summary ------------------------------------------------------------------

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
values() { # script, field: one value per run
  local script=$1 name=$2 round
  for round in $(seq 1 "$RUNS"); do field "$name" <"$RESULTS_DIR/${script%.lua}-run$round.txt.bench"; done
}
per_request() { # script, field: CPU µs per request, one value per run
  local script=$1 name=$2 round
  for round in $(seq 1 "$RUNS"); do
    awk -v f="$name" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
         END { printf "%.1f\n", v[f] * 1e6 / v["requests"] }' "$RESULTS_DIR/${script%.lua}-run$round.txt.bench"
  done
}
total() { awk '{ s += $1 } END { printf "%.1f", s }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }

BASE_RPS=$(values healthz.lua rps | median)

{
  echo "| endpoint | req/s (median) | req/s per run | p50 | p99 | req/s vs /healthz | server CPU µs/req | wrk CPU µs/req | non-200 | socket errors | target |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
  for entry in "${ENDPOINTS[@]}"; do
    read -r path script target <<<"$entry"
    rps=$(values "$script" rps | median)
    runs=$(values "$script" rps | awk '{ printf "%s%.0f", (NR > 1 ? " / " : ""), $1 }')
    p50=$(values "$script" p50_us | median)
    p99=$(values "$script" p99_us | median)
    non200=$(values "$script" non200 | awk '{ s += $1 } END { print s + 0 }')
    sockerr=$(values "$script" socket_errors | awk '{ s += $1 } END { print s + 0 }')
    server_us=$(per_request "$script" server_cpu_s | median | xargs printf "%.1f")
    wrk_us=$(per_request "$script" wrk_cpu_s | median | xargs printf "%.1f")
    ratio=$(awk -v a="$rps" -v b="$BASE_RPS" 'BEGIN { printf "%.0f %%", 100 * a / b }')
    if [[ $target == 0 ]]; then
      verdict="baseline"
    elif awk -v a="$rps" -v t="$target" 'BEGIN { exit !(a >= t) }'; then
      verdict="≥ $target: **met**"
    else
      verdict="≥ $target: **missed**"
    fi
    printf '| `%s` | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$path" "$rps" "$runs" "$(ms "$p50")" "$(ms "$p99")" "$ratio" "$server_us" "$wrk_us" "$non200" "$sockerr" "$verdict"
  done
  echo
  all_bench=$(cat "$RESULTS_DIR"/*-run*.txt.bench)
  echo "CPU seconds over all timed runs: server $(field server_cpu_s <<<"$all_bench" | total)," \
    "wrk $(field wrk_cpu_s <<<"$all_bench" | total), other processes $(field other_cpu_s <<<"$all_bench" | total)," \
    "idle $(field idle_cpu_s <<<"$all_bench" | total) (load average before the runs: $LOAD_BEFORE)."
  echo
  echo "Server memory: peak RSS (VmHWM) $((RSS_PEAK / 1024)) MiB; RSS idle after start $((RSS_IDLE / 1024)) MiB, at the end $((RSS_END / 1024)) MiB."
  echo
  echo "Conditions: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $RUNS runs per endpoint (median), rounds interleaved," \
    "warm-up $WARMUP per endpoint; wrk and the server share the machine's $(nproc) CPUs" \
    "($(lscpu | sed -n 's/^Model name: *//p' | head -1)); $(date -u '+%Y-%m-%d %H:%M UTC');" \
    "server built from $BUILT_FROM; wrk $(wrk -v 2>&1 | sed -n 's/^wrk \([^ ]*\).*/\1/p' | head -1)."
} >"$RESULTS_DIR/summary.md"

echo
cat "$RESULTS_DIR/summary.md"
echo
log "raw wrk output: $RESULTS_DIR"

if ((FAILED)); then
  die "some responses were not 200 or sockets failed; these numbers are not valid"
fi
