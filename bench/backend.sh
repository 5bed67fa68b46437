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
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-3s}

# Endpoint name, wrk script, target req/s (0: no target).
ENDPOINTS=(
  "/healthz healthz.lua 0"
  "/getprofile getprofile.lua 10000"
  "/access_token access_token.lua 5000"
)

need_tools wrk jq curl
install_needed_packages
build_binary
make_dirs deskbridge-bench.XXXXXX backend
trap cleanup EXIT

# --- seed and start the backend -----------------------------------------------

DATA="$WORK/data"
seed_demo_data "$DATA"
start_server backend "$WORK/server.out" "$RESULTS_DIR/server.stderr" "deskbridge backend listening on" \
  backend --data-dir "$DATA" --listen 127.0.0.1:0
BASE=$SERVER_URL
RSS_IDLE=$(kib "$SERVER_PID" VmRSS)

# --- credentials, and one checked request per endpoint ------------------------

get_backend_credentials "$BASE"
expect_200 /healthz "$BASE/healthz"
expect_200 /getprofile -X POST "$BASE/getprofile" \
  -H "Authorization: Bearer $ACCESS_TOKEN" -H "api-key: $API_KEY" -H "customer-auth: JWT $JWT"
expect_200 /access_token -X POST "$BASE/access_token" -H "Authorization: Basic $BASIC" \
  -H 'Content-Type: application/x-www-form-urlencoded' --data 'grant_type=client_credentials'
log "credentials obtained; every endpoint answers 200"

export BENCH_ACCESS_TOKEN=$ACCESS_TOKEN BENCH_API_KEY=$API_KEY BENCH_JWT=$JWT BENCH_BASIC=$BASIC

# --- runs ---------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $WARMUP != 0 ]]; then
  for entry in "${ENDPOINTS[@]}"; do
    read -r path script _ <<<"$entry"
    log "warm-up $path ($WARMUP)"
    run_wrk "$THREADS" "$CONNECTIONS" "$script" "$BASE" "$WARMUP" "$RESULTS_DIR/warmup-${script%.lua}.txt"
  done
fi

# Rounds interleave the endpoints, so slow drift of the machine (other
# tenants, thermal) spreads over all of them instead of biasing one.
for round in $(seq 1 "$RUNS"); do
  for entry in "${ENDPOINTS[@]}"; do
    read -r path script _ <<<"$entry"
    out="$RESULTS_DIR/${script%.lua}-run$round.txt"
    log "round $round/$RUNS: $path (wrk -t$THREADS -c$CONNECTIONS -d$DURATION)"
    server_before=$(ticks "$SERVER_PID")
    read -r busy_before idle_before < <(machine_ticks)
    run_wrk "$THREADS" "$CONNECTIONS" "$script" "$BASE" "$DURATION" "$out"
    read -r busy_after idle_after < <(machine_ticks)
    server_after=$(ticks "$SERVER_PID")
    account_run "$out" $((busy_after - busy_before)) $((idle_after - idle_before)) "" \
      server=$((server_after - server_before))
  done
done

RSS_PEAK=$(kib "$SERVER_PID" VmHWM)
RSS_END=$(kib "$SERVER_PID" VmRSS)

# --- summary ------------------------------------------------------------------

BASE_RPS=$(values healthz rps | median)

{
  echo "| endpoint | req/s (median) | req/s per run | p50 | p99 | req/s vs /healthz | server CPU µs/req | wrk CPU µs/req | non-200 | socket errors | target |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
  for entry in "${ENDPOINTS[@]}"; do
    read -r path script target <<<"$entry"
    stem=${script%.lua}
    rps=$(values "$stem" rps | median)
    runs=$(values "$stem" rps | per_run)
    p50=$(values "$stem" p50_us | median)
    p99=$(values "$stem" p99_us | median)
    non200=$(values "$stem" non200 | sum_field)
    sockerr=$(values "$stem" socket_errors | sum_field)
    server_us=$(per_request "$stem" server_cpu_s | median | xargs printf "%.1f")
    wrk_us=$(per_request "$stem" wrk_cpu_s | median | xargs printf "%.1f")
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
    "($(cpu_model)); $(date -u '+%Y-%m-%d %H:%M UTC');" \
    "server built from $BUILT_FROM; wrk $(wrk_version)."
} >"$RESULTS_DIR/summary.md"

finish
