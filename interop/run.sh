#!/usr/bin/env bash
# Runs the third-party interop suite (Authlib, requests-oauthlib, PyJWT)
# against the real deskbridge binary. Assumes it is built: DESKBRIDGE_BIN,
# or target/debug/deskbridge by default.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

venv="${VENV:-.venv-interop}"
case "$venv" in
  /*) ;;
  *) venv="$repo_root/$venv" ;;
esac
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r interop/requirements.txt

exec "$venv/bin/python" -m pytest -q -p no:cacheprovider interop "$@"
