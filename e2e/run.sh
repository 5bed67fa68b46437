#!/usr/bin/env bash
# Runs the browser tests: the agent console, the web SDK (and its examples in
# examples/web-sdk) and the demo company site in Debian's Chromium, driven by
# playwright-core, against the real `deskbridge demo`. Builds no Rust: the
# binary is DESKBRIDGE_BIN, or target/debug/deskbridge by default; it packs
# the SDK's npm package and builds the React example on it. Installs Chromium
# (apt), playwright-core and the example's React and Vite (npm ci) when they
# are missing. Screenshots and the demo's log land in e2e/screenshots/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/.." && pwd)"

bin="${DESKBRIDGE_BIN:-$repo_root/target/debug/deskbridge}"
case "$bin" in
  /*) ;;
  *) bin="$PWD/$bin" ;;
esac
if [[ ! -x "$bin" ]]; then
  echo "deskbridge binary not found at $bin: build it with 'cargo build -p deskbridge' or set DESKBRIDGE_BIN" >&2
  exit 2
fi
export DESKBRIDGE_BIN="$bin"

export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM_BIN" ]]; then
  echo "installing Debian's chromium" >&2
  sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

# The npm package (sdk/pack.sh: npm pack), its types checked by tsc, and the
# React example built on it with React's development build, where
# StrictMode mounts effects twice.
bash "$repo_root/sdk/pack.sh" >/dev/null
(
  cd "$repo_root/examples/web-sdk/react"
  npm ci --no-audit --no-fund --loglevel=error
  npm run --silent check-types
  npm run --silent build:development >/dev/null
)

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
mkdir -p screenshots
exec node --test --test-concurrency=1 --test-reporter=spec test/*.test.js "$@"
