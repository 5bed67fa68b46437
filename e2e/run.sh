#!/usr/bin/env bash
# Runs the browser tests: the agent console, the web SDK and the demo company
# site in Debian's Chromium, driven by playwright-core, against the real
# `deskbridge demo`. Builds nothing: the binary is DESKBRIDGE_BIN, or
# target/debug/deskbridge by default. Installs Chromium (apt) and
# playwright-core (npm ci) when they are missing. Screenshots and the demo's
# log land in e2e/screenshots/.
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

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
mkdir -p screenshots
exec node --test --test-concurrency=1 --test-reporter=spec test/*.test.js "$@"
