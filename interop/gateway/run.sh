#!/usr/bin/env bash
# Runs the gateway's third-party interop suite: the real deskbridge binary's
# OAuth client-credentials client against panva's oidc-provider and a
# vendor-style token endpoint. Assumes the binary is built: DESKBRIDGE_BIN, or
# target/debug/deskbridge by default. Needs Node.js >= 20.19 and npm.
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
export DESKBRIDGE_BIN="$bin"

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
# One test file at a time: each starts its own servers and gateway.
exec node --test --test-concurrency=1 --test-reporter=spec test/*.test.js "$@"
