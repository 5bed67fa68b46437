#!/usr/bin/env bash
# The gateway on one store and on many instances, under the same load in the
# same run (issue 16), on the action path with a warm system token:
#
#   sqlite   wrk → one gateway on SQLite (the embedded default, no [cluster])
#   pg1      wrk → instance A of the cluster below, directly: one instance on
#            Postgres + Redis (B and C are up but get no requests)
#   pg3      wrk → nginx (round robin, keep-alive) → instances A, B, C, all on
#            one Postgres database and one Redis key prefix
#
# Every target calls POST /v1/conversations/{id}/actions/getprofile as an
# agent against the same reference backend. Then the cross-instance event
# latency: an agent's event stream on B (and one on A, for comparison),
# sessions opened on A one after another, time from each request on A to its
# session_opened on B (bench/event_latency.py).
#
#   bench/cluster.sh                       # defaults: -t2 -c64 -d10s, 3 rounds
#   DESKBRIDGE_BIN=/path/to/deskbridge bench/cluster.sh   # skip the build
#
# Environment:
#   THREADS, CONNECTIONS, DURATION   wrk -t/-c/-d                  (2, 64, 10s)
#   RUNS                             rounds, each running every target once (3)
#   WARMUP                           untimed run per target         (3s; 0 for none)
#   INSTANCES                        gateways behind nginx          (3)
#   EVENTS                           sessions opened for the event latency (300)
#   PG_ADMIN_URL                     a Postgres URL that may create and drop
#                                    databases, without the database
#                                    (postgres://postgres@127.0.0.1:5432)
#   REDIS_URL                        (redis://127.0.0.1:6379/0)
#   PG_SYNCHRONOUS_COMMIT            synchronous_commit of the bench's database
#                                    (the server's default; `off` shows what
#                                    waiting for the WAL flush of each audit
#                                    batch costs, at the price of losing the
#                                    last commits in a Postgres crash)
#   NGINX_WORKERS, GATEWAY_WORKERS   as in bench/gateway.sh          (auto, one per CPU)
#   RESULTS_DIR, REV, DESKBRIDGE_BIN as in bench/gateway.sh
#
# The script creates a database of its own (deskbridge_bench_<random>) and a
# Redis key prefix of its own, and drops both at exit. Everything runs on
# this machine and shares its CPUs: three instances get no more CPU than one.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-3s}
INSTANCES=${INSTANCES:-3}
EVENTS=${EVENTS:-300}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
GATEWAY_WORKERS=${GATEWAY_WORKERS:-}
((INSTANCES >= 2)) || die "INSTANCES must be at least 2 (the event latency needs two)"

# Target name, URL variable, agent token variable, conversation variable,
# gateway PIDs variable (set once the servers run).
TARGETS=(
  "sqlite SQLITE_URL SQLITE_AGENT SQLITE_CONVERSATION SQLITE_PIDS"
  "pg1 A_URL CLUSTER_AGENT CLUSTER_CONVERSATION A_PIDS"
  "pg3 NGINX_URL CLUSTER_AGENT CLUSTER_CONVERSATION CLUSTER_PIDS"
)

need_tools wrk jq curl psql redis-cli python3
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || NEED_PACKAGES+=(nginx)
install_needed_packages
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_binary
make_dirs deskbridge-clbench.XXXXXX cluster
chmod 711 "$WORK" # nginx workers drop to nobody when started as root

SUFFIX=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
DATABASE=deskbridge_bench_$SUFFIX
KEY_PREFIX=deskbridge-bench-$SUFFIX:
# Stops the servers, then drops the database and the Redis keys.
cluster_cleanup() {
  cleanup
  psql -q "$PG_ADMIN_URL/postgres" -c "DROP DATABASE IF EXISTS $DATABASE" >/dev/null 2>&1 \
    || log "could not drop database $DATABASE"
  redis-cli -u "$REDIS_URL" --scan --pattern "$KEY_PREFIX*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null \
    || log "could not delete the Redis keys $KEY_PREFIX*"
}
trap cluster_cleanup EXIT
psql -q "$PG_ADMIN_URL/postgres" -c "CREATE DATABASE $DATABASE" || die "could not create database $DATABASE"
if [[ -n ${PG_SYNCHRONOUS_COMMIT:-} ]]; then
  psql -q "$PG_ADMIN_URL/postgres" -c "ALTER DATABASE $DATABASE SET synchronous_commit = '$PG_SYNCHRONOUS_COMMIT'" \
    || die "could not set synchronous_commit"
fi
STORE_URL="$PG_ADMIN_URL/$DATABASE"
log "store $STORE_URL, Redis $REDIS_URL with key prefix $KEY_PREFIX"

# --- backend ------------------------------------------------------------------

DATA="$WORK/backend"
seed_demo_data "$DATA"
start_server backend "$WORK/backend.out" "$RESULTS_DIR/backend.stderr" "deskbridge backend listening on" \
  backend --data-dir "$DATA" --listen 127.0.0.1:0
BACKEND_PID=$SERVER_PID BACKEND_URL=$SERVER_URL
get_backend_credentials "$BACKEND_URL"

# --- gateways -----------------------------------------------------------------

APP_KEY="bench-web-app-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Every instance seals and opens the same tokens: one key for all.
TOKEN_KEY=$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')
export BENCH_CLIENT_SECRET=$CLIENT_SECRET BENCH_GATEWAY_API_KEY=$API_KEY BENCH_APP_KEY=$APP_KEY \
  BENCH_TOKEN_KEY=$TOKEN_KEY BENCH_REDIS_URL=$REDIS_URL

gateway_config "$WORK/sqlite" >"$WORK/sqlite.toml"
start_gateway sqlite "$WORK/sqlite.toml"
SQLITE_AGENT=$AGENT SQLITE_PIDS=$SERVER_PID SQLITE_URL=$SERVER_URL
SQLITE_CONVERSATION=$(open_conversation "$SQLITE_URL") || die "could not open a session on the SQLite gateway"

CLUSTER_PIDS="" CLUSTER_URLS=()
for i in $(seq 1 "$INSTANCES"); do
  name=gw-$(printf "\\x$(printf %x $((96 + i)))") # gw-a, gw-b, …
  gateway_config "$WORK/$name" "[store]
url = \"$STORE_URL\"
[crypto]
token_key = { env = \"BENCH_TOKEN_KEY\" }
[cluster]
redis_url = { env = \"BENCH_REDIS_URL\" }
key_prefix = \"$KEY_PREFIX\"
instance_id = \"$name\"" >"$WORK/$name.toml"
  # The agent lives in the shared store: added once, through the first.
  ADD_AGENT=$((i == 1)) start_gateway "$name" "$WORK/$name.toml"
  ((i > 1)) || CLUSTER_AGENT=$AGENT
  CLUSTER_PIDS+="$SERVER_PID " CLUSTER_URLS+=("$SERVER_URL")
done
A_PIDS=${CLUSTER_PIDS%% *} A_URL=${CLUSTER_URLS[0]} B_URL=${CLUSTER_URLS[1]}
CLUSTER_CONVERSATION=$(open_conversation "$A_URL") || die "could not open a session on instance A"

# --- nginx --------------------------------------------------------------------

NGINX_DIR="$WORK/nginx"
mkdir -p "$NGINX_DIR"
NGINX_PORT=$(free_port)
servers=""
for url in "${CLUSTER_URLS[@]}"; do servers+="server ${url#http://};"$'\n'"        "; done
template=$(<"$BENCH_DIR/nginx-cluster.conf.template")
template=${template//@WORKERS@/$NGINX_WORKERS}
template=${template//@DIR@/$NGINX_DIR}
template=${template//@LISTEN@/127.0.0.1:$NGINX_PORT}
template=${template//@SERVERS@/$servers}
printf '%s\n' "$template" >"$NGINX_DIR/nginx.conf"
start_nginx "$NGINX_DIR" "$NGINX_PORT"
NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
[[ -n $NGINX_WORKER_PIDS ]] || die "no nginx worker processes"

# --- one checked request per target and instance ------------------------------

action() { # base URL, agent token, conversation
  expect_200 "$1" -X POST "$1/v1/conversations/$3/actions/getprofile" -H "Authorization: Bearer $2"
}
action "$SQLITE_URL" "$SQLITE_AGENT" "$SQLITE_CONVERSATION"
for url in "${CLUSTER_URLS[@]}"; do action "$url" "$CLUSTER_AGENT" "$CLUSTER_CONVERSATION"; done
# One round of nginx's rotation, so each instance has been through it once.
for _ in "${CLUSTER_URLS[@]}"; do action "$NGINX_URL" "$CLUSTER_AGENT" "$CLUSTER_CONVERSATION"; done
log "every target and instance answers the action with 200"

# --- runs ---------------------------------------------------------------------

# Transactions committed in the bench's database so far (the stats lag up to
# half a second behind: read after a pause).
pg_xacts() {
  psql -tA "$PG_ADMIN_URL/postgres" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DATABASE'"
}
# The Postgres server processes serving the bench's database now (the
# gateways' pooled connections: they live as long as the pool keeps them).
pg_pids() {
  psql -tA "$PG_ADMIN_URL/postgres" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DATABASE' AND pid <> pg_backend_pid()" \
    | while read -r pid; do [[ -r /proc/$pid/stat ]] && echo "$pid"; done | tr '\n' ' '
}
# Commands the Redis server processed so far, from anyone: the Redis is shared.
redis_commands() {
  redis-cli -u "$REDIS_URL" info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'
}

# ticks, counting a process that has gone as 0 (a pool may close a connection).
live_ticks() {
  local pid total=0
  for pid in "$@"; do
    [[ -r /proc/$pid/stat ]] && total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

measure() { # round, target, URL variable, agent variable, conversation variable, PIDs variable
  local round=$1 target=$2 url=${!3} out="$RESULTS_DIR/load-$2-run$1.txt" pids=${!6}
  local b0 g0 n0 p0 busy0 idle0 x0 r0 b1 g1 n1 p1 busy1 idle1 x1 r1 nginx_pids="" pg
  # Postgres's CPU is that of the connections open when the run starts: a
  # connection opened or closed during the run is missed (the pools keep
  # theirs; the store's local server makes this measurable at all).
  pg=$(pg_pids)
  [[ $target != pg3 ]] || nginx_pids="$NGINX_PID $NGINX_WORKER_PIDS"
  log "round $round/$RUNS: $target (wrk -t$THREADS -c$CONNECTIONS -d$DURATION)"
  sleep 0.6
  x0=$(pg_xacts) r0=$(redis_commands)
  # shellcheck disable=SC2086 # one PID per word
  b0=$(ticks "$BACKEND_PID"); g0=$(ticks $pids); n0=$(ticks $nginx_pids); p0=$(live_ticks $pg)
  read -r busy0 idle0 < <(machine_ticks)
  BENCH_AGENT_TOKEN=${!4} BENCH_CONVERSATION=${!5} \
    run_wrk "$THREADS" "$CONNECTIONS" gateway_action.lua "$url" "$DURATION" "$out"
  read -r busy1 idle1 < <(machine_ticks)
  # shellcheck disable=SC2086 # one PID per word
  b1=$(ticks "$BACKEND_PID"); g1=$(ticks $pids); n1=$(ticks $nginx_pids); p1=$(live_ticks $pg)
  r1=$(redis_commands)
  sleep 0.6
  x1=$(pg_xacts)
  account_run "$out" $((busy1 - busy0)) $((idle1 - idle0)) " pg_xacts=$((x1 - x0)) redis_commands=$((r1 - r0)) pg_connections=$(wc -w <<<"$pg")" \
    backend=$((b1 - b0)) gateway=$((g1 - g0)) nginx=$((n1 - n0)) postgres=$((p1 - p0))
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $WARMUP != 0 ]]; then
  for entry in "${TARGETS[@]}"; do
    read -r target url_var agent_var conv_var _ <<<"$entry"
    log "warm-up $target ($WARMUP)"
    BENCH_AGENT_TOKEN=${!agent_var} BENCH_CONVERSATION=${!conv_var} \
      run_wrk "$THREADS" "$CONNECTIONS" gateway_action.lua "${!url_var}" "$WARMUP" "$RESULTS_DIR/load-warmup-$target.txt"
  done
fi
for round in $(seq 1 "$RUNS"); do
  for entry in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086 # the entry's words are the arguments
    measure "$round" $entry
  done
done

# --- cross-instance event latency ---------------------------------------------

log "event latency: $EVENTS sessions opened on A ($A_URL), streams on B ($B_URL) and A"
python3 "$BENCH_DIR/event_latency.py" --origin "$A_URL" --remote "$B_URL" --agent-token "$CLUSTER_AGENT" \
  --app-key "$APP_KEY" --count "$EVENTS" --raw "$RESULTS_DIR/events.txt" >"$RESULTS_DIR/events.bench" \
  || { cat "$RESULTS_DIR/events.bench" >&2; FAILED=1; }
EVENT_LINE=$(cat "$RESULTS_DIR/events.bench")
log "  ${EVENT_LINE#BENCH }"
event() { field "$1" <<<"$EVENT_LINE"; }

# --- summary ------------------------------------------------------------------

describe() {
  case $1 in
    sqlite) echo "(a) one instance, SQLite" ;;
    pg1) echo "(b) one instance, Postgres + Redis" ;;
    pg3) echo "(c) $INSTANCES instances, Postgres + Redis, nginx round robin" ;;
  esac
}
per_req() { per_request "load-$1" "$2" | median | xargs printf "%.1f"; }
per_req2() { per_run_ratio "load-$1" "$2" requests | median | xargs printf "%.3f"; }

{
  echo "Under load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency on the action (warm system token), $RUNS rounds, targets alternating within each round (medians)."
  echo
  echo "| setup | req/s (median) | req/s per run | p50 | p99 | gateway CPU µs/req | backend CPU µs/req | nginx CPU µs/req | Postgres CPU µs/req | Postgres transactions/req | Redis commands/req | non-200 | socket errors |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for entry in "${TARGETS[@]}"; do
    read -r target _ <<<"$entry"
    printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(describe "$target")" \
      "$(values "load-$target" rps | median)" "$(values "load-$target" rps | per_run)" \
      "$(ms "$(values "load-$target" p50_us | median)")" "$(ms "$(values "load-$target" p99_us | median)")" \
      "$(per_req "$target" gateway_cpu_s)" "$(per_req "$target" backend_cpu_s)" \
      "$([[ $target == pg3 ]] && per_req "$target" nginx_cpu_s || echo —)" \
      "$([[ $target == sqlite ]] && echo — || per_req "$target" postgres_cpu_s)" \
      "$([[ $target == sqlite ]] && echo — || per_req2 "$target" pg_xacts)" \
      "$([[ $target == sqlite ]] && echo — || per_req2 "$target" redis_commands)" \
      "$(values "load-$target" non200 | sum_field)" "$(values "load-$target" socket_errors | sum_field)"
  done
  echo
  a=$(values load-sqlite rps | median) b=$(values load-pg1 rps | median) c=$(values load-pg3 rps | median)
  awk -v a="$a" -v b="$b" -v c="$c" -v n="$INSTANCES" 'BEGIN {
    printf "- (b)/(a): one instance on Postgres + Redis keeps %.0f %% of the SQLite throughput (target: at least 90 %%): %s\n", 100 * b / a, (b >= 0.9 * a ? "**met**" : "**missed**")
    printf "- (c)/(a): %d instances behind nginx: %.0f %% of one SQLite instance, on the same CPUs\n", n, 100 * c / a }'
  echo "- (b)/(a) in each round: $(for r in $(seq 1 "$RUNS"); do
      echo "$(field rps <"$RESULTS_DIR/load-pg1-run$r.txt.bench") $(field rps <"$RESULTS_DIR/load-sqlite-run$r.txt.bench")"
    done | awk '{ printf "%s%.0f %%", (NR > 1 ? " / " : ""), 100 * $1 / $2 }')"
  echo
  echo "Cross-instance events: $(event events) sessions opened on A one after another (every 20 ms), session_opened seen on B's agent stream" \
    "$(event remote_seen) times, on A's own $(event local_seen) times; from sending the request on A:"
  echo
  echo "| stream | p50 | p99 | max |"
  echo "|---|---:|---:|---:|"
  echo "| on B (through Redis) | $(ms "$(event remote_p50_us)") | $(ms "$(event remote_p99_us)") | $(ms "$(event remote_max_us)") |"
  echo "| on A (local) | $(ms "$(event local_p50_us)") | $(ms "$(event local_p99_us)") | — |"
  echo "| B's stream behind A's, same event (the relay through Redis) | $(ms "$(event added_p50_us)") | $(ms "$(event added_p99_us)") | — |"
  echo "| (A's answer to the request) | $(ms "$(event answer_p50_us)") | $(ms "$(event answer_p99_us)") | — |"
  echo
  echo "Conditions: wrk, the backend, nginx, the SQLite gateway and $INSTANCES cluster instances (${GATEWAY_WORKERS:-one per CPU} tokio workers each)," \
    "Postgres $(psql -tA "$PG_ADMIN_URL/postgres" -c 'SHOW server_version' | cut -d' ' -f1) and Redis $(redis-cli -u "$REDIS_URL" info server | tr -d '\r' | sed -n 's/^redis_version://p')" \
    "on the machine's $(nproc) CPUs ($(cpu_model)), shared by all, and with other work on the machine;" \
    "load average before the runs: $LOAD_BEFORE; warm-up $WARMUP per target; $(date -u '+%Y-%m-%d %H:%M UTC'); built from $BUILT_FROM;" \
    "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'); wrk $(wrk_version)."
} >"$RESULTS_DIR/summary.md"

finish
