#!/usr/bin/env bash
# What each system credential costs (issue 18), against the reference backend
# serving HTTPS itself, in one run:
#
# 1. Per token fetch: POST /v1/connections/{name}/probe as an admin, which
#    fetches a new system token each time (bypassing the cache), then sends
#    one GET to the base URL. One connection per method, all to the same
#    backend TLS listener over warm (pooled) connections:
#      basic       client_secret_basic, no client certificate (the baseline)
#      jwt         private_key_jwt, an EC P-256 key: the gateway signs an
#                  ES256 assertion, the backend verifies it and records its jti
#      mtls-basic  client_secret_basic, with a client certificate
#      tlsauth     tls_client_auth: the client certificate alone (RFC 8705)
#    Run one probe at a time (wrk -t1 -c1): the median latency is the cost of
#    one fetch, with no queueing; the difference to `basic` in the same round
#    is what the method adds (signing and verifying, or the certificate).
# 2. The action path with warm connections: POST
#    /v1/conversations/{id}/actions/getprofile over two connections to the
#    same listener (client_auth = "request"), both client_secret_basic:
#      https       no client certificate
#      mtls        with a client certificate
# 3. A fresh TLS handshake (what a token fetch or call pays when no pooled
#    connection is left): curl, a new process each time (no session
#    resumption), to the backend's listener, with and without the client
#    certificate, HANDSHAKES times each, interleaved; the time from TCP
#    connected to TLS established (curl's time_appconnect - time_connect).
#    The client side is curl's OpenSSL, the server side the backend's rustls.
#
#   bench/credentials.sh                  # build the working tree, 5 rounds
#   DESKBRIDGE_BIN=/path/to/deskbridge bench/credentials.sh
#
# Environment:
#   RUNS                      rounds; each runs every target once (5)
#   DURATION                  wrk -d of each timed run (10s)
#   WARMUP                    untimed run per target (3s; 0 for none)
#   THREADS, CONNECTIONS      wrk -t/-c of the action pass (2, 64)
#   HANDSHAKES                fresh handshakes per kind (200)
#   RESULTS_DIR, REV, DESKBRIDGE_BIN   as in bench/gateway.sh
#
# wrk, the backend and the gateway share this machine's CPUs.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
HANDSHAKES=${HANDSHAKES:-200}

METHODS=(basic jwt mtls-basic tlsauth)
PATHS=(https mtls)

need_tools wrk jq curl openssl
install_needed_packages
build_binary
make_dirs deskbridge-credbench.XXXXXX credentials
trap cleanup EXIT

# --- certificates -------------------------------------------------------------

# One CA signs the backend's certificate and the gateway's client certificate;
# all keys are EC P-256.
PKI="$WORK/pki"
mkdir -p "$PKI"
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
issue_cert() { # name, subject, extensions
  new_key "$PKI/$1.key"
  openssl req -new -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$PKI/$1.ext" -out "$PKI/$1.pem" 2>/dev/null
}
new_key "$PKI/ca.key"
openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=deskbridge bench CA" -days 2 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$PKI/ca.pem" 2>/dev/null
issue_cert backend "/CN=127.0.0.1" "basicConstraints=CA:FALSE
subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue_cert gateway "/CN=deskbridge gateway" "basicConstraints=CA:FALSE
extendedKeyUsage=clientAuth"
THUMBPRINT=$(openssl x509 -in "$PKI/gateway.pem" -outform der | openssl dgst -sha256 -binary | basenc --base64url | tr -d =)
# The private_key_jwt client's key pair.
new_key "$PKI/jwt.key"
openssl pkey -in "$PKI/jwt.key" -pubout -out "$PKI/jwt.pub" 2>/dev/null
# curl (credentials, checks) trusts the bench CA.
export CURL_CA_BUNDLE="$PKI/ca.pem"

# --- backend ------------------------------------------------------------------

DATA="$WORK/backend"
seed_demo_data "$DATA"
JWT_CLIENT=bench-jwt
TLS_CLIENT=bench-tls
"$BIN" backend --data-dir "$DATA" client add "$JWT_CLIENT" --public-key "$PKI/jwt.pub" --scope profile:read \
  >/dev/null || die "client add --public-key failed"
cat >"$WORK/backend.toml" <<EOF
[tls]
cert = "$PKI/backend.pem"
key = "$PKI/backend.key"
client_ca = "$PKI/ca.pem"
client_auth = "request"

[[tls_clients]]
client_id = "$TLS_CLIENT"
thumbprint = "$THUMBPRINT"
scopes = "profile:read"
EOF
start_server backend "$WORK/backend.out" "$RESULTS_DIR/backend.stderr" "deskbridge backend listening on" \
  backend --config "$WORK/backend.toml" --data-dir "$DATA" --listen 127.0.0.1:0
BACKEND_PID=$SERVER_PID BACKEND_URL=$SERVER_URL
[[ $BACKEND_URL == https://* ]] || die "the backend does not serve HTTPS: $BACKEND_URL"
get_backend_credentials "$BACKEND_URL"

# --- gateway ------------------------------------------------------------------

# A [[connections]] block: name, [connections.system_auth] method lines, whether
# it shows the client certificate (1/0).
connection() { # name, auth lines, client cert
  local client_tls=""
  [[ $3 == 1 ]] && client_tls="client_cert = \"$PKI/gateway.pem\"
client_key = \"$PKI/gateway.key\""
  cat <<EOF
[[connections]]
name = "$1"
base_url = "$BACKEND_URL"
timeout_ms = 2000
customer_login_url = "$BACKEND_URL/customer_authenticate"
[connections.tls]
ca_file = "$PKI/ca.pem"
$client_tls
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "$BACKEND_URL/access_token"
scope = "profile:read"
$2
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

EOF
}
SECRET_AUTH="client_id = \"$CLIENT_ID\"
client_secret = { env = \"BENCH_CLIENT_SECRET\" }"
{
  echo "[server]"
  echo "data_dir = \"$WORK/gateway\""
  echo
  connection basic "$SECRET_AUTH" 0
  connection jwt "client_id = \"$JWT_CLIENT\"
auth_method = \"private_key_jwt\"
private_key = { file = \"$PKI/jwt.key\" }" 0
  connection mtls-basic "$SECRET_AUTH" 1
  connection tlsauth "client_id = \"$TLS_CLIENT\"
auth_method = \"tls_client_auth\"" 1
  # The action path: https (no client certificate) is `basic`, mtls is `mtls-basic`.
  cat <<EOF
[[channels]]
name = "web"
app_key = { env = "BENCH_APP_KEY" }
# One agent token carries all of wrk's load: far above any default rate.
[limits]
agent_per_second = 10000000
agent_burst = 10000000
session_per_second = 10000000
session_burst = 10000000
EOF
} >"$WORK/gateway.toml"
APP_KEY="bench-web-app-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export BENCH_CLIENT_SECRET=$CLIENT_SECRET BENCH_GATEWAY_API_KEY=$API_KEY BENCH_APP_KEY=$APP_KEY
"$BIN" config check "$WORK/gateway.toml" >/dev/null || die "the gateway refuses its configuration"

ADMIN_TOKEN=$(DESKBRIDGE_LOG=warn "$BIN" agent add bench-admin --role admin --config "$WORK/gateway.toml") \
  || die "deskbridge agent add failed"
start_server gateway "$WORK/gateway.out" "$RESULTS_DIR/gateway.stderr" "deskbridge gateway listening on" \
  serve --config "$WORK/gateway.toml" --listen 127.0.0.1:0
GATEWAY_PID=$SERVER_PID GATEWAY_URL=$SERVER_URL

# Opens a web session on connection $1; prints its conversation.
open_conversation_on() { # connection
  curl -sS --fail-with-body -X POST "$GATEWAY_URL/v1/sessions" \
    -H "x-deskbridge-app-key: $APP_KEY" -H 'Content-Type: application/json' \
    --data "$(jq -cn --arg t "$JWT" --arg c "$1" '{channel: "web", connection: $c, auth: {token: $t}}')" \
    | jq -er .conversation_id
}
declare -A CONVERSATION
CONVERSATION[https]=$(open_conversation_on basic) || die "could not open a session on basic"
CONVERSATION[mtls]=$(open_conversation_on mtls-basic) || die "could not open a session on mtls-basic"

# --- one checked request per target -------------------------------------------

for method in "${METHODS[@]}"; do
  expect_200 "probe $method" -X POST "$GATEWAY_URL/v1/connections/$method/probe" -H "Authorization: Bearer $ADMIN_TOKEN"
  jq -e '.ok' "$WORK/check.body" >/dev/null || die "probe $method failed: $(cat "$WORK/check.body")"
done
for path in "${PATHS[@]}"; do
  expect_200 "action over $path" -X POST "$GATEWAY_URL/v1/conversations/${CONVERSATION[$path]}/actions/getprofile" \
    -H "Authorization: Bearer $ADMIN_TOKEN"
done
# The certificate is what authenticates tlsauth: without it the backend refuses
# that client, so the probe above did use the certificate.
status=$(curl -sS -o "$WORK/check.body" -w '%{http_code}' -X POST "$BACKEND_URL/access_token" \
  --data "grant_type=client_credentials&client_id=$TLS_CLIENT")
[[ $status == 401 ]] || die "the backend gave $TLS_CLIENT a token without its certificate ($status)"
log "every method fetches a token and both action paths answer 200"

# --- runs ---------------------------------------------------------------------

measure() { # output prefix, threads, connections, script, round, env assignments...
  local prefix=$1 threads=$2 conns=$3 script=$4 round=$5 out b0 g0 b1 g1 busy0 idle0 busy1 idle1
  shift 5
  out="$RESULTS_DIR/$prefix-run$round.txt"
  log "round $round/$RUNS: $prefix (wrk -t$threads -c$conns -d$DURATION)"
  b0=$(ticks "$BACKEND_PID"); g0=$(ticks "$GATEWAY_PID")
  read -r busy0 idle0 < <(machine_ticks)
  (export "$@"; run_wrk "$threads" "$conns" "$script" "$GATEWAY_URL" "$DURATION" "$out")
  read -r busy1 idle1 < <(machine_ticks)
  b1=$(ticks "$BACKEND_PID"); g1=$(ticks "$GATEWAY_PID")
  account_run "$out" $((busy1 - busy0)) $((idle1 - idle0)) "" backend=$((b1 - b0)) gateway=$((g1 - g0))
}
probe() { # method, round, duration
  DURATION=$3 measure "probe-$1" 1 1 probe.lua "$2" BENCH_CONNECTION="$1" BENCH_ADMIN_TOKEN="$ADMIN_TOKEN"
}
action() { # path, round, duration
  DURATION=$3 measure "action-$1" "$THREADS" "$CONNECTIONS" gateway_action.lua "$2" \
    BENCH_CONVERSATION="${CONVERSATION[$1]}" BENCH_AGENT_TOKEN="$ADMIN_TOKEN"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ $WARMUP != 0 ]]; then
  for method in "${METHODS[@]}"; do probe "$method" warmup "$WARMUP"; done
  for path in "${PATHS[@]}"; do action "$path" warmup "$WARMUP"; done
fi
# Each round runs every target once, so the machine's drift spreads over all.
for round in $(seq 1 "$RUNS"); do
  for method in "${METHODS[@]}"; do probe "$method" "$round" "$DURATION"; done
  for path in "${PATHS[@]}"; do action "$path" "$round" "$DURATION"; done
done

# Fresh handshakes, interleaved so drift spreads over both kinds.
handshake_us() { # extra curl args...: µs from TCP connected to TLS established
  curl -sS -o /dev/null -w '%{time_connect} %{time_appconnect}\n' "$@" "$BACKEND_URL/healthz" \
    | awk '{ printf "%.0f\n", ($2 - $1) * 1e6 }'
}
log "fresh TLS handshakes: $HANDSHAKES with and $HANDSHAKES without the client certificate"
for _ in $(seq 1 "$HANDSHAKES"); do
  handshake_us >>"$RESULTS_DIR/handshake-server.txt"
  handshake_us --cert "$PKI/gateway.pem" --key "$PKI/gateway.key" >>"$RESULTS_DIR/handshake-client-cert.txt"
done
percentile() { # p (0-100): of the numbers on stdin
  sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; print v[i] }'
}

# --- summary ------------------------------------------------------------------

# One value per round: field $2 of target $1 minus that of target $3 (for
# *_cpu_s fields, per request, in µs).
per_round_diff() { # target, field, baseline target
  local round a b
  for round in $(seq 1 "$RUNS"); do
    a=$(field_per_req "$1" "$2" "$round"); b=$(field_per_req "$3" "$2" "$round")
    awk -v a="$a" -v b="$b" 'BEGIN { print a - b }'
  done
}
# Field $2 of target $1 in round $3: as is, or µs per request for *_cpu_s.
field_per_req() { # target, field, round
  awk -v f="$2" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { if (f ~ /_cpu_s$/) print v[f] / v["requests"] * 1e6; else print v[f] }' \
    "$RESULTS_DIR/$1-run$3.txt.bench"
}
# One value per round: field $2 of target $1 divided by that of target $3.
per_round_ratio() { # target, field, baseline target
  local round
  for round in $(seq 1 "$RUNS"); do
    awk -v a="$(field_per_req "$1" "$2" "$round")" -v b="$(field_per_req "$3" "$2" "$round")" 'BEGIN { print a / b }'
  done
}
signed() { awk -v v="$1" 'BEGIN { printf (v == 0 ? "%.0f" : "%+.0f"), v }'; }

{
  echo "Per token fetch: POST /v1/connections/{name}/probe, one at a time (wrk -t1 -c1 -d$DURATION), $RUNS rounds (medians; differences and ratios per round against basic, then their median)."
  echo
  echo "| connection | method | client cert | probes/s | p50 | p50 − basic | gateway CPU µs/probe | − basic | backend CPU µs/probe | − basic | non-200 |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for method in "${METHODS[@]}"; do
    case $method in
      basic) what="client_secret_basic | no" ;;
      jwt) what="private_key_jwt (ES256) | no" ;;
      mtls-basic) what="client_secret_basic | yes" ;;
      tlsauth) what="tls_client_auth | yes" ;;
    esac
    printf '| %s | %s | %.0f | %.0f µs | %s µs | %.1f | %s | %.1f | %s | %s |\n' "$method" "$what" \
      "$(values "probe-$method" rps | median)" "$(values "probe-$method" p50_us | median)" \
      "$(signed "$(per_round_diff "probe-$method" p50_us probe-basic | median)")" \
      "$(per_request "probe-$method" gateway_cpu_s | median)" \
      "$(signed "$(per_round_diff "probe-$method" gateway_cpu_s probe-basic | median)")" \
      "$(per_request "probe-$method" backend_cpu_s | median)" \
      "$(signed "$(per_round_diff "probe-$method" backend_cpu_s probe-basic | median)")" \
      "$(values "probe-$method" non200 | sum_field)"
  done
  echo
  echo "The action path with warm connections: wrk -t$THREADS -c$CONNECTIONS -d$DURATION on POST /v1/conversations/{id}/actions/getprofile, $RUNS rounds (medians; ratios per round against https)."
  echo
  echo "| path | req/s | req/s per run | req/s ÷ https | p50 | p50 ÷ https | p99 | gateway CPU µs/req | backend CPU µs/req | non-200 |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  for path in "${PATHS[@]}"; do
    printf '| %s | %.0f | %s | %.3f | %s | %.3f | %s | %.1f | %.1f | %s |\n' "$path" \
      "$(values "action-$path" rps | median)" "$(values "action-$path" rps | per_run)" \
      "$(per_round_ratio "action-$path" rps action-https | median)" \
      "$(ms "$(values "action-$path" p50_us | median)")" \
      "$(per_round_ratio "action-$path" p50_us action-https | median)" \
      "$(ms "$(values "action-$path" p99_us | median)")" \
      "$(per_request "action-$path" gateway_cpu_s | median)" \
      "$(per_request "action-$path" backend_cpu_s | median)" \
      "$(values "action-$path" non200 | sum_field)"
  done
  echo
  echo "A fresh TLS handshake to the backend (curl, a new process each, no resumption; TCP connected to TLS established), $HANDSHAKES of each, interleaved."
  echo
  echo "| handshake | p50 | p90 | p50 − server only |"
  echo "|---|---:|---:|---:|"
  base=$(percentile 50 <"$RESULTS_DIR/handshake-server.txt")
  for kind in server client-cert; do
    case $kind in
      server) what="server certificate only" ;;
      client-cert) what="with the client certificate (mutual TLS)" ;;
    esac
    p50=$(percentile 50 <"$RESULTS_DIR/handshake-$kind.txt")
    printf '| %s | %s µs | %s µs | %s µs |\n' "$what" "$p50" "$(percentile 90 <"$RESULTS_DIR/handshake-$kind.txt")" \
      "$(signed $((p50 - base)))"
  done
  echo
  echo "Conditions: wrk, the backend (HTTPS, client_auth = \"request\") and the gateway on the machine's $(nproc) CPUs" \
    "($(cpu_model)), shared by all; load average before the runs: $LOAD_BEFORE; warm-up $WARMUP per target;" \
    "$(date -u '+%Y-%m-%d %H:%M UTC'); built from $BUILT_FROM; wrk $(wrk_version); $(openssl version | cut -d' ' -f1-2) for the certificates."
} >"$RESULTS_DIR/summary.md"

finish
