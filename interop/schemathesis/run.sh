#!/usr/bin/env bash
# Schemathesis against both OpenAPI documents, with real credentials: the
# reference backend (system token, API key, customer JWT) and the gateway
# (an admin agent's token, a channel's app key), each the real deskbridge
# binary on a free loopback port. Every answer must be no 5xx and match its
# documented status, content type, headers and schema. Bounded (examples per
# operation) and seeded, so a run is repeatable and takes a few minutes.
# Assumes the binary is built: DESKBRIDGE_BIN, or target/debug/deskbridge.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"

bin="${DESKBRIDGE_BIN:-$repo_root/target/debug/deskbridge}"
case "$bin" in
  /*) ;;
  *) bin="$PWD/$bin" ;;
esac
if [[ ! -x "$bin" ]]; then
  echo "deskbridge binary not found at $bin: build it with 'cargo build -p deskbridge' or set DESKBRIDGE_BIN" >&2
  exit 2
fi

venv="${VENV:-.venv-schemathesis}"
case "$venv" in
  /*) ;;
  *) venv="$repo_root/$venv" ;;
esac
if [[ ! -x "$venv/bin/python" ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
python="$venv/bin/python"

# Examples per operation and phase, and the seed: raise MAX_EXAMPLES for a
# longer hunt; the default keeps both runs at a few minutes on 2 cores.
max_examples="${MAX_EXAMPLES:-300}"
seed="${SEED:-15}"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME COMMAND...: runs a server in the background (in this shell, so
# the trap stops it), logging to $work/NAME.log, and sets $url once it says
# it is listening and answers /healthz.
start() {
  local name="$1"
  shift
  "$@" >"$work/$name.log" 2>&1 &
  local pid="$!"
  pids+=("$pid")
  url=""
  for _ in $(seq 300); do
    url="$(grep -oE "deskbridge $name listening on http://[^ ]+" "$work/$name.log" | head -1 | awk '{print $NF}')" || true
    if [[ -n "$url" ]] && curl -fsS -o /dev/null "$url/healthz"; then
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "the $name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# json FIELD...: reads a field of the JSON on stdin.
json() {
  "$python" -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$@"
}

# The backend, seeded with demo customers, a client and an API key.
"$bin" backend --data-dir "$work/backend" seed-demo --json >"$work/seed.json"
start backend "$bin" backend --data-dir "$work/backend" --listen 127.0.0.1:0
backend="$url"
client_id="$(json clients 0 client_id <"$work/seed.json")"
client_secret="$(json clients 0 client_secret <"$work/seed.json")"
api_key="$(json api_keys 0 key <"$work/seed.json")"
customer="$(json users 0 username <"$work/seed.json")"
customer_password="$(json users 0 password <"$work/seed.json")"
system_token="$(curl -fsS -u "$client_id:$client_secret" -d grant_type=client_credentials \
  "$backend/access_token" | json access_token)"
customer_jwt="$(curl -fsS --data-urlencode "username=$customer" --data-urlencode "password=$customer_password" \
  "$backend/customer_authenticate" | json JWT)"

# The gateway, connected to that backend; secrets come from the environment.
export SCHEMATHESIS_CLIENT_SECRET="$client_secret" SCHEMATHESIS_API_KEY="$api_key"
SCHEMATHESIS_APP_KEY="dbw_$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
export SCHEMATHESIS_APP_KEY
cat >"$work/gateway.toml" <<TOML
[server]
data_dir = "$work/gateway"

[[connections]]
name = "acme"
base_url = "$backend"
customer_login_url = "$backend/customer_authenticate"

[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "$backend/access_token"
client_id = "$client_id"
client_secret = { env = "SCHEMATHESIS_CLIENT_SECRET" }
scope = "profile:read"

[connections.api_key]
value = { env = "SCHEMATHESIS_API_KEY" }

[connections.identity]
jwks_url = "$backend/.well-known/jwks.json"
issuer = "$backend"
audience = "deskbridge"

[[connections.actions]]
name = "getprofile"
path = "/getprofile"

[console]
secure_cookies = false

# Thousands of requests in a minute from one agent and one address: the
# rates are raised so that the answers are the operations', not 429s.
[limits]
agent_per_second = 100000
agent_burst = 100000
session_per_second = 100000
session_burst = 100000

[[channels]]
name = "web"
app_key = { env = "SCHEMATHESIS_APP_KEY" }
allowed_origins = ["$backend"]
TOML
agent_token="$("$bin" agent add --config "$work/gateway.toml" --role admin schemathesis | grep -oE 'dbg_[A-Za-z0-9_-]+' | head -1)"
start gateway "$bin" serve --config "$work/gateway.toml" --listen 127.0.0.1:0
gateway="$url"

# Every check but one: positive_data_acceptance wants a 2xx for every request
# its schema allows, and a schema cannot say the rules that make such a
# request wrong all the same (a console sign-in needs a name and password or
# a token; a session needs a connection that exists). Each such refusal is a
# documented 4xx, which the other checks hold to its schema. The output
# hides credentials. Arguments: the server's URL, a config file or "", and
# options of `schemathesis run`. It runs in the temporary directory, where
# Schemathesis keeps its cache, so no run replays an earlier one's finds.
run() {
  local url="$1" config="$2"
  shift 2
  cd "$work"
  "$venv/bin/schemathesis" ${config:+--config-file "$config"} run "$url/openapi.json" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --generation-database none \
    --workers 1 \
    --request-timeout 10 \
    --no-color \
    "$@"
}

# A console session of that agent, for /console/api/me (only there: a
# logout would end it).
console_session="$(curl -fsS -D - -o /dev/null -H 'content-type: application/json' \
  -d "{\"token\":\"$agent_token\"}" "$gateway/console/api/login" |
  sed -n 's/^[Ss]et-[Cc]ookie: deskbridge_console=\([^;]*\);.*/\1/p')"

# A conversation of a customer who logged in, and its session: the
# operations on them then reach the company instead of answering 404.
opened="$(curl -fsS -H "x-deskbridge-app-key: $SCHEMATHESIS_APP_KEY" -H 'content-type: application/json' \
  -d "{\"channel\":\"web\",\"connection\":\"acme\",\"auth\":{\"token\":\"$customer_jwt\"}}" \
  "$gateway/v1/sessions")"
cat >"$work/gateway-schemathesis.toml" <<TOML
[[operations]]
include-path-regex = '^/v1/conversations/\\{id\\}'
parameters = { "path.id" = "$(json conversation_id <<<"$opened")", "path.action" = "getprofile" }

[[operations]]
include-path-regex = '^/v1/sessions/\\{id\\}'
parameters = { "path.id" = "$(json session_id <<<"$opened")" }

[[operations]]
include-path = "/v1/connections/{name}/probe"
parameters = { "path.name" = "acme" }

[[operations]]
include-path = "/console/api/me"
parameters = { "cookie.deskbridge_console" = "$console_session" }
TOML

started=$SECONDS
passed=0
failed=0
# check LABEL COMMAND...: one schemathesis run, counted.
check() {
  echo "=== schemathesis: $1 ==="
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
}

check "backend $backend/openapi.json, OAuth endpoints (client Basic credentials)" \
  run "$backend" "" --include-tag oauth -a "$client_id:$client_secret"
# The first demo customer's own account and card, so the data operations
# reach their data instead of answering 404.
cat >"$work/backend-schemathesis.toml" <<TOML
[[operations]]
include-path = "/accounts/{account_id}/transactions"
parameters = { "path.account_id" = "acc-1001" }

[[operations]]
include-path = "/cards/{card_id}/block"
parameters = { "path.card_id" = "card-1101" }
TOML
check "backend $backend/openapi.json, the rest (system token, API key, customer JWT)" \
  run "$backend" "$work/backend-schemathesis.toml" --exclude-tag oauth \
  -H "Authorization: Bearer $system_token" \
  -H "api-key: $api_key" \
  -H "customer-auth: JWT $customer_jwt"
# The two event streams (text/event-stream) stay open while the session or
# agent does: every valid request would run into the request timeout. Their
# answers are tested by the gateway's own tests and the browser tests.
check "gateway $gateway/openapi.json" \
  run "$gateway" "$work/gateway-schemathesis.toml" \
  --exclude-path-regex '/events$' \
  -H "Authorization: Bearer $agent_token" \
  -H "x-deskbridge-app-key: $SCHEMATHESIS_APP_KEY"

# A panic that the answers did not show (a task of its own) fails the run too.
for log in "$work/backend.log" "$work/gateway.log"; do
  if grep -q "panicked" "$log"; then
    echo "=== $(basename "$log" .log) panicked ===" >&2
    grep -A5 "panicked" "$log" >&2
    failed=$((failed + 1))
  fi
done

echo "schemathesis took $((SECONDS - started)) s"
echo "schemathesis: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
