#!/usr/bin/env bash
# The gateway against the backend alone and against nginx, under the same
# load in the same run:
#
#   direct   wrk → backend  POST /getprofile, all three credentials from wrk
#   nginx    wrk → nginx → backend: nginx adds the three credentials as
#            fixed headers (bench/nginx.conf.template), keep-alive upstream
#   gateway  wrk → gateway → backend: POST /v1/conversations/{id}/actions/getprofile
#            as an agent; the gateway adds the system token (from its warm
#            token cache), the API key and the conversation's customer token
#
#   bench/gateway.sh                       # defaults: -t2 -c64 -d10s, 3 runs
#   REV=HEAD bench/gateway.sh              # build a commit, not the working tree
#   DESKBRIDGE_BIN=/path/to/deskbridge bench/gateway.sh   # skip the build
#
# Environment:
#   THREADS, CONNECTIONS, DURATION   wrk -t/-c/-d            (2, 64, 10s)
#   RUNS                             runs per target          (3)
#   WARMUP                           untimed run per target   (3s; 0 for none)
#   LOW_CONNECTIONS                  a second pass with wrk -t1 -c<this>, the
#                                    latency of one request with no queueing
#                                    (1; 0 skips it)
#   NGINX_WORKERS                    nginx worker_processes   (auto)
#   GATEWAY_WORKERS                  the gateway's tokio worker threads
#                                    (TOKIO_WORKER_THREADS; default: one per CPU)
#   PROXY_CPUS, BACKEND_CPUS,        CPU placement (taskset lists; default:
#   WRK_CPUS                         anywhere): e.g. PROXY_CPUS=1 BACKEND_CPUS=0
#                                    WRK_CPUS=0 gives nginx and the gateway a
#                                    CPU of their own, as a proxy in front of
#                                    a company's servers would have
#   BREAKDOWN                        1: also measure stages of the gateway's
#                                    request path (its /healthz; a 401 after
#                                    one agent read; a 404 after one read and
#                                    an audit record) and print their cost (0)
#   RESULTS_DIR                      where raw wrk output and summary.md go
#                                    (default: bench/results/gateway-<UTC time>)
#   REV, DESKBRIDGE_BIN              as in bench/backend.sh
#   COMPARE_BIN                      A/B mode: a second gateway from this binary
#                                    (own data dir, agent and session) calls the
#                                    same backend; RUNS rounds of the action
#                                    alternate between the two gateways, and
#                                    only that comparison runs
#
# The backend, the proxy under test and wrk all run on this machine and
# share its CPUs: the numbers are "this box, load generator included".
# Every response is checked (wrk/common.lua); any non-200 answer or socket
# error makes the script fail after printing the tables.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-3s}
LOW_CONNECTIONS=${LOW_CONNECTIONS:-1}
BREAKDOWN=${BREAKDOWN:-0}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
GATEWAY_WORKERS=${GATEWAY_WORKERS:-}
PROXY_CPUS=${PROXY_CPUS:-}
BACKEND_CPUS=${BACKEND_CPUS:-}

# Target name, wrk script, base URL variable (set once the servers run).
COMPARED=(
  "direct getprofile.lua BACKEND_URL"
  "nginx proxy_getprofile.lua NGINX_URL"
  "gateway gateway_action.lua GATEWAY_URL"
)
# Stages of the gateway's request path, each adding one piece of work; the
# full action (above) is the last stage.
STAGES=(
  "gw-healthz healthz.lua GATEWAY_URL"
  "gw-401-agent-read gateway_unknown_agent.lua GATEWAY_URL"
  "gw-404-read-audit gateway_unknown_action.lua GATEWAY_URL"
)
TARGETS=("${COMPARED[@]}")
[[ $BREAKDOWN == 0 ]] || TARGETS+=("${STAGES[@]}")

need_tools wrk jq curl
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || NEED_PACKAGES+=(nginx)
install_needed_packages
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_binary
make_dirs deskbridge-gwbench.XXXXXX gateway
chmod 711 "$WORK" # nginx workers drop to nobody when started as root
trap cleanup EXIT

# --- backend ------------------------------------------------------------------

DATA="$WORK/backend"
seed_demo_data "$DATA"
start_server backend "$WORK/backend.out" "$RESULTS_DIR/backend.stderr" "deskbridge backend listening on" \
  backend --data-dir "$DATA" --listen 127.0.0.1:0
BACKEND_PID=$SERVER_PID BACKEND_URL=$SERVER_URL
pin "$BACKEND_CPUS" "$BACKEND_PID"
get_backend_credentials "$BACKEND_URL"

# --- gateway ------------------------------------------------------------------

APP_KEY="bench-web-app-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
gateway_config "$WORK/gateway" >"$WORK/gateway.toml"
export BENCH_CLIENT_SECRET=$CLIENT_SECRET BENCH_GATEWAY_API_KEY=$API_KEY BENCH_APP_KEY=$APP_KEY

start_gateway gateway "$WORK/gateway.toml"
AGENT_TOKEN=$AGENT GATEWAY_PID=$SERVER_PID GATEWAY_URL=$SERVER_URL
CONVERSATION=$(open_conversation "$GATEWAY_URL") || die "could not open a session on the gateway"

# --- nginx --------------------------------------------------------------------

NGINX_DIR="$WORK/nginx"
mkdir -p "$NGINX_DIR"
NGINX_PORT=$(free_port)
template=$(<"$BENCH_DIR/nginx.conf.template")
template=${template//@WORKERS@/$NGINX_WORKERS}
template=${template//@DIR@/$NGINX_DIR}
template=${template//@LISTEN@/127.0.0.1:$NGINX_PORT}
template=${template//@BACKEND@/${BACKEND_URL#http://}}
template=${template//@ACCESS_TOKEN@/$ACCESS_TOKEN}
template=${template//@API_KEY@/$API_KEY}
template=${template//@JWT@/$JWT}
printf '%s\n' "$template" >"$NGINX_DIR/nginx.conf"
start_nginx "$NGINX_DIR" "$NGINX_PORT"

# --- one checked request per target -------------------------------------------

expect_200 direct -X POST "$BACKEND_URL/getprofile" \
  -H "Authorization: Bearer $ACCESS_TOKEN" -H "api-key: $API_KEY" -H "customer-auth: JWT $JWT"
cp "$WORK/check.body" "$WORK/direct.body"
expect_200 nginx -X POST "$NGINX_URL/getprofile"
cmp -s "$WORK/check.body" "$WORK/direct.body" || die "nginx's body differs from the backend's"
expect_200 gateway -X POST "$GATEWAY_URL/v1/conversations/$CONVERSATION/actions/getprofile" \
  -H "Authorization: Bearer $AGENT_TOKEN"
jq -e --slurpfile d "$WORK/direct.body" '.data == $d[0]' "$WORK/check.body" >/dev/null \
  || die "the gateway's data differs from the backend's: $(cat "$WORK/check.body")"
log "every target answers 200 with the same profile"
if [[ $BREAKDOWN != 0 ]]; then
  for check in "401 gateway_unknown_agent dbg_bench_not_an_agent_token_0000000000000000 getprofile" \
               "404 gateway_unknown_action $AGENT_TOKEN bench_no_such_action"; do
    read -r want name token action <<<"$check"
    status=$(curl -sS -o "$WORK/check.body" -w '%{http_code}' -X POST \
      "$GATEWAY_URL/v1/conversations/$CONVERSATION/actions/$action" -H "Authorization: Bearer $token")
    [[ $status == "$want" ]] || die "$name answered $status, not $want: $(cat "$WORK/check.body")"
  done
fi

export BENCH_ACCESS_TOKEN=$ACCESS_TOKEN BENCH_API_KEY=$API_KEY BENCH_JWT=$JWT \
  BENCH_AGENT_TOKEN=$AGENT_TOKEN BENCH_CONVERSATION=$CONVERSATION

# --- process accounting -------------------------------------------------------

# Where the processes ran, for the summary.
placement() {
  if [[ -z $PROXY_CPUS$BACKEND_CPUS${WRK_CPUS:-} ]]; then
    echo "shared by all"
  else
    echo "pinned: proxies on CPU ${PROXY_CPUS:-any}, backend on CPU ${BACKEND_CPUS:-any}, wrk on CPU ${WRK_CPUS:-any}"
  fi
}

NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
[[ -n $NGINX_WORKER_PIDS ]] || die "no nginx worker processes"
# shellcheck disable=SC2086 # one PID per word
pin "$PROXY_CPUS" "$NGINX_PID" $NGINX_WORKER_PIDS

# Context switches of all the gateway's threads so far (threads that have
# ended drop out; the gateway's threads live as long as it does).
gateway_switches() {
  cat /proc/"$GATEWAY_PID"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'
}

GATEWAY_RSS_IDLE=$(kib "$GATEWAY_PID" VmRSS)
BACKEND_RSS_IDLE=$(kib "$BACKEND_PID" VmRSS)

measure() { # pass, round, target, threads, connections, script, url
  local pass=$1 round=$2 target=$3 threads=$4 conns=$5 script=$6 url=$7
  local out="$RESULTS_DIR/$pass-$target-run$round.txt"
  local b0 g0 n0 busy0 idle0 b1 g1 n1 busy1 idle1 s0 s1 gu0 nu0 gu1 nu1 user
  log "$pass round $round/$RUNS: $target (wrk -t$threads -c$conns -d$DURATION)"
  b0=$(ticks "$BACKEND_PID"); g0=$(ticks "$GATEWAY_PID"); n0=$(ticks "$NGINX_PID" $NGINX_WORKER_PIDS)
  gu0=$(user_ticks "$GATEWAY_PID"); nu0=$(user_ticks "$NGINX_PID" $NGINX_WORKER_PIDS)
  read -r busy0 idle0 < <(machine_ticks)
  s0=$(gateway_switches)
  run_wrk "$threads" "$conns" "$script" "$url" "$DURATION" "$out"
  read -r busy1 idle1 < <(machine_ticks)
  s1=$(gateway_switches)
  b1=$(ticks "$BACKEND_PID"); g1=$(ticks "$GATEWAY_PID"); n1=$(ticks "$NGINX_PID" $NGINX_WORKER_PIDS)
  gu1=$(user_ticks "$GATEWAY_PID"); nu1=$(user_ticks "$NGINX_PID" $NGINX_WORKER_PIDS)
  # The proxies' user-space share, as extra fields (not processes: no double count).
  user=$(awk -v g=$((gu1 - gu0)) -v n=$((nu1 - nu0)) -v h="$CLK_TCK" \
    'BEGIN { printf " gateway_user_cpu_s=%.2f nginx_user_cpu_s=%.2f", g / h, n / h }')
  account_run "$out" $((busy1 - busy0)) $((idle1 - idle0)) " gateway_switches=$((s1 - s0))$user" \
    backend=$((b1 - b0)) gateway=$((g1 - g0)) nginx=$((n1 - n0))
}

# A pass: warm-up of every target, then RUNS rounds, each running every
# target once, so slow drift of the machine spreads over all of them.
run_pass() { # pass name, threads, connections
  local pass=$1 threads=$2 conns=$3 entry target script var round
  if [[ $WARMUP != 0 ]]; then
    for entry in "${TARGETS[@]}"; do
      read -r target script var <<<"$entry"
      log "$pass warm-up $target ($WARMUP)"
      run_wrk "$threads" "$conns" "$script" "${!var}" "$WARMUP" "$RESULTS_DIR/$pass-warmup-$target.txt"
    done
  fi
  for round in $(seq 1 "$RUNS"); do
    for entry in "${TARGETS[@]}"; do
      read -r target script var <<<"$entry"
      measure "$pass" "$round" "$target" "$threads" "$conns" "$script" "${!var}"
    done
  done
}

# --- A/B of two gateway binaries (COMPARE_BIN) --------------------------------

# Each gateway's CPU per request is also given as a ratio to the backend's in
# the same run: this machine's speed drifts between rounds (±15 % seen), and
# the ratio moves much less than either number.
compare_gateways() {
  local conf="$WORK/gateway-b.toml" agent pid url conversation round side
  sed "s|^data_dir = .*|data_dir = \"$WORK/gateway-b\"|" "$WORK/gateway.toml" >"$conf"
  # A binary from before [limits] (which had none) takes the file without it.
  if ! "$COMPARE_BIN" config check "$conf" >/dev/null 2>&1; then
    sed -i '/^# One agent token/,$d' "$conf"
  fi
  BIN=$COMPARE_BIN start_gateway gateway-b "$conf"
  agent=$AGENT pid=$SERVER_PID url=$SERVER_URL
  conversation=$(open_conversation "$url") || die "could not open a session on gateway b"
  expect_200 gateway-b -X POST "$url/v1/conversations/$conversation/actions/getprofile" -H "Authorization: Bearer $agent"
  if [[ $WARMUP != 0 ]]; then
    log "A/B warm-up ($WARMUP each)"
    run_wrk "$THREADS" "$CONNECTIONS" gateway_action.lua "$GATEWAY_URL" "$WARMUP" "$RESULTS_DIR/ab-warmup-a.txt"
    BENCH_CONVERSATION=$conversation BENCH_AGENT_TOKEN=$agent \
      run_wrk "$THREADS" "$CONNECTIONS" gateway_action.lua "$url" "$WARMUP" "$RESULTS_DIR/ab-warmup-b.txt"
  fi
  for round in $(seq 1 "$RUNS"); do
    for side in a b; do
      if [[ $side == a ]]; then
        measure ab "$round" a "$THREADS" "$CONNECTIONS" gateway_action.lua "$GATEWAY_URL"
      else
        GATEWAY_PID=$pid BENCH_CONVERSATION=$conversation BENCH_AGENT_TOKEN=$agent \
          measure ab "$round" b "$THREADS" "$CONNECTIONS" gateway_action.lua "$url"
      fi
    done
  done
  {
    echo "A/B: wrk -t$THREADS -c$CONNECTIONS -d$DURATION against each gateway's action, $RUNS rounds alternating (medians)."
    echo
    echo "| gateway | binary | req/s (median) | req/s per run | p50 | gateway CPU µs/req | of which user space | backend CPU µs/req | gateway ÷ backend CPU | context switches/req |"
    echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"
    for side in a b; do
      printf '| %s | %s | %.0f | %s | %s | %.1f | %.1f | %.1f | %.3f | %.2f |\n' "$side" \
        "$([[ $side == a ]] && echo "$BUILT_FROM" || echo "binary $COMPARE_BIN")" \
        "$(values "ab-$side" rps | median)" "$(values "ab-$side" rps | per_run)" \
        "$(ms "$(values "ab-$side" p50_us | median)")" \
        "$(per_request "ab-$side" gateway_cpu_s | median)" "$(per_request "ab-$side" gateway_user_cpu_s | median)" \
        "$(per_request "ab-$side" backend_cpu_s | median)" \
        "$(per_run_ratio "ab-$side" gateway_cpu_s backend_cpu_s | median)" \
        "$(per_run_ratio "ab-$side" gateway_switches requests | median)"
    done
    echo
    echo "Conditions: $(nproc) CPUs ($(cpu_model)) for wrk, the backend and both gateways, $(placement);" \
      "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')."
  } >"$RESULTS_DIR/summary.md"
}

if [[ -n ${COMPARE_BIN:-} ]]; then
  [[ -x $COMPARE_BIN ]] || die "COMPARE_BIN: no executable at $COMPARE_BIN"
  compare_gateways
  finish
  exit
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
run_pass load "$THREADS" "$CONNECTIONS"
GATEWAY_RSS_PEAK=$(kib "$GATEWAY_PID" VmHWM)
BACKEND_RSS_PEAK=$(kib "$BACKEND_PID" VmHWM)
NGINX_RSS=0
for pid in $NGINX_PID $NGINX_WORKER_PIDS; do NGINX_RSS=$((NGINX_RSS + $(kib "$pid" VmHWM))); done
if [[ $LOW_CONNECTIONS != 0 ]]; then
  run_pass low 1 "$LOW_CONNECTIONS"
fi
GATEWAY_RSS_END=$(kib "$GATEWAY_PID" VmRSS)

# --- summary ------------------------------------------------------------------

table() { # pass, connections
  local pass=$1 entry target script var rps runs p50 p99 non200 sockerr added99 added50 proxy_us
  local direct_p50 direct_p99
  direct_p50=$(values "$pass-direct" p50_us | median)
  direct_p99=$(values "$pass-direct" p99_us | median)
  echo "| path | req/s (median) | req/s per run | p50 | p99 | added p50 vs direct | added p99 vs direct | backend CPU µs/req | proxy CPU µs/req | of which user space | wrk CPU µs/req | non-200 | socket errors |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for entry in "${COMPARED[@]}"; do
    read -r target script var <<<"$entry"
    rps=$(values "$pass-$target" rps | median)
    runs=$(values "$pass-$target" rps | per_run)
    p50=$(values "$pass-$target" p50_us | median)
    p99=$(values "$pass-$target" p99_us | median)
    non200=$(values "$pass-$target" non200 | sum_field)
    sockerr=$(values "$pass-$target" socket_errors | sum_field)
    case $target in
      direct) added50="—"; added99="—"; proxy_us="—"; user_us="—" ;;
      *)
        added50=$(awk -v a="$p50" -v b="$direct_p50" 'BEGIN { printf "%+.2f ms", (a - b) / 1000 }')
        added99=$(awk -v a="$p99" -v b="$direct_p99" 'BEGIN { printf "%+.2f ms", (a - b) / 1000 }')
        proxy_us=$(per_request "$pass-$target" "${target}_cpu_s" | median | xargs printf "%.1f")
        user_us=$(per_request "$pass-$target" "${target}_user_cpu_s" | median | xargs printf "%.1f")
        ;;
    esac
    printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$target" "$rps" "$runs" "$(ms "$p50")" "$(ms "$p99")" "$added50" "$added99" \
      "$(per_request "$pass-$target" backend_cpu_s | median | xargs printf "%.1f")" "$proxy_us" "$user_us" \
      "$(per_request "$pass-$target" wrk_cpu_s | median | xargs printf "%.1f")" "$non200" "$sockerr"
  done
  local all
  all=$(cat "$RESULTS_DIR/$pass"-*-run*.txt.bench)
  echo
  echo "CPU seconds over the timed runs of this pass$([[ $BREAKDOWN == 0 ]] || echo ", breakdown stages included"):" \
    "backend $(field backend_cpu_s <<<"$all" | total)," \
    "gateway $(field gateway_cpu_s <<<"$all" | total), nginx $(field nginx_cpu_s <<<"$all" | total)," \
    "wrk $(field wrk_cpu_s <<<"$all" | total), other processes $(field other_cpu_s <<<"$all" | total)," \
    "idle $(field idle_cpu_s <<<"$all" | total)."
}

# The gateway's stages: each row adds one piece of work to the stage it
# names (the 401 and the 404 both build on /healthz; the action on the 404).
breakdown() { # pass
  local pass=$1 entry target script var rps p50 gw gwu sw bad base added what
  local -A stage_gw stage_p50
  echo "| gateway stage | answer | req/s (median) | p50 | gateway CPU µs/req | of which user space | added CPU µs/req | added p50 | over | gateway context switches/req | unexpected answers |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
  for entry in "${STAGES[@]}" "gateway gateway_action.lua GATEWAY_URL"; do
    read -r target script var <<<"$entry"
    rps=$(values "$pass-$target" rps | median)
    p50=$(values "$pass-$target" p50_us | median)
    gw=$(per_request "$pass-$target" gateway_cpu_s | median)
    gwu=$(per_request "$pass-$target" gateway_user_cpu_s | median)
    sw=$(per_run_ratio "$pass-$target" gateway_switches requests | median | xargs printf "%.1f")
    bad=$(values "$pass-$target" non200 | sum_field)
    case $target in
      gw-healthz) base="" what="GET /healthz: HTTP in and out, no work" ;;
      gw-401-agent-read) base=gw-healthz what="401: one SQLite read (an unknown agent token; misses are not cached)" ;;
      gw-404-read-audit) base=gw-healthz what="404: agent and conversation from memory, one audit record (queued)" ;;
      gateway) base=gw-404-read-audit what="200: as the 404, plus the backend call (the measured action)" ;;
    esac
    if [[ -n $base ]]; then
      added=$(awk -v a="$gw" -v b="${stage_gw[$base]}" -v p="$p50" -v q="${stage_p50[$base]}" \
        'BEGIN { printf "%+.1f | %+.2f ms", a - b, (p - q) / 1000 }')
    else
      added="— | —"
    fi
    printf '| %s | %s | %.0f | %s | %.1f | %.1f | %s | %s | %s | %s |\n' "$target" "$what" "$rps" "$(ms "$p50")" "$gw" "$gwu" "$added" \
      "${base:-—}" "$sw" "$bad"
    stage_gw[$target]=$gw stage_p50[$target]=$p50
  done
}

verdict() {
  local g_rps n_rps g50 n50 d50
  g_rps=$(values load-gateway rps | median); n_rps=$(values load-nginx rps | median)
  g50=$(values load-gateway p50_us | median); n50=$(values load-nginx p50_us | median)
  d50=$(values load-direct p50_us | median)
  awk -v g="$g_rps" -v n="$n_rps" 'BEGIN {
    printf "- throughput: gateway %.0f req/s vs nginx %.0f req/s (%.0f %%): %s\n", g, n, 100 * g / n, (g >= n ? "**met**" : "**missed**") }'
  awk -v g="$g50" -v n="$n50" -v d="$d50" 'BEGIN {
    printf "- added p50 under load: gateway %+.2f ms vs nginx %+.2f ms: %s\n", (g - d) / 1000, (n - d) / 1000, (g <= n ? "**met**" : "**missed**") }'
  if [[ $LOW_CONNECTIONS != 0 ]]; then
    g50=$(values low-gateway p50_us | median); n50=$(values low-nginx p50_us | median)
    d50=$(values low-direct p50_us | median)
    awk -v g="$g50" -v n="$n50" -v d="$d50" -v c="$LOW_CONNECTIONS" 'BEGIN {
      printf "- added p50 at %d connection(s): gateway %+.3f ms vs nginx %+.3f ms: %s\n", c, (g - d) / 1000, (n - d) / 1000, (g <= n ? "**met**" : "**missed**") }'
  fi
}

{
  echo "Under load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $RUNS runs per path (median), rounds interleaved."
  echo
  table load
  echo
  if [[ $LOW_CONNECTIONS != 0 ]]; then
    echo "One request at a time: wrk -t1 -c$LOW_CONNECTIONS -d$DURATION --latency, $RUNS runs per path (median)."
    echo
    table low
    echo
  fi
  if [[ $BREAKDOWN != 0 ]]; then
    echo "Breakdown of the gateway's path under load (wrk -t$THREADS -c$CONNECTIONS):"
    echo
    breakdown load
    echo
    if [[ $LOW_CONNECTIONS != 0 ]]; then
      echo "Breakdown, one request at a time (wrk -t1 -c$LOW_CONNECTIONS):"
      echo
      breakdown low
      echo
    fi
  fi
  echo "Target (gateway vs nginx, warm token cache):"
  echo
  verdict
  echo
  echo "Memory: gateway peak RSS (VmHWM) $((GATEWAY_RSS_PEAK / 1024)) MiB after the load pass" \
    "($((GATEWAY_RSS_IDLE / 1024)) MiB idle after start, $((GATEWAY_RSS_END / 1024)) MiB at the end);" \
    "backend $((BACKEND_RSS_PEAK / 1024)) MiB ($((BACKEND_RSS_IDLE / 1024)) MiB idle);" \
    "nginx master + workers $((NGINX_RSS / 1024)) MiB."
  echo
  echo "Conditions: wrk, the backend, nginx ($NGINX_WORKERS workers: $(echo $NGINX_WORKER_PIDS | wc -w)) and the gateway (${GATEWAY_WORKERS:-one per CPU} tokio workers) on the machine's $(nproc) CPUs" \
    "($(cpu_model)), $(placement); load average before the runs: $LOAD_BEFORE;" \
    "warm-up $WARMUP per path and pass; $(date -u '+%Y-%m-%d %H:%M UTC'); built from $BUILT_FROM;" \
    "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'); wrk $(wrk_version)."
} >"$RESULTS_DIR/summary.md"

finish
