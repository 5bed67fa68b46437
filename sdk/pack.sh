#!/usr/bin/env bash
# Builds the npm package @deskbridge/web-sdk from the SDK the gateway serves
# (crates/gateway/assets/sdk/deskbridge.js) and packs it with `npm pack`
# into sdk/dist/. Its version is the Cargo workspace's. Prints the tarball's path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml")"
[[ -n "$version" ]] || { echo "no [workspace.package] version in Cargo.toml" >&2; exit 1; }
source="$root/crates/gateway/assets/sdk/deskbridge.js"
grep -q "var VERSION = \"$version\";" "$source" || {
  echo "deskbridge.js says another version than the workspace's $version: update VERSION in it" >&2
  exit 1
}

build="$here/build"
rm -rf "$build" && mkdir -p "$build" "$here/dist"
cp "$source" "$build/deskbridge.js"
# The ES module: the same code, its Deskbridge exported instead of left global.
{
  cat "$source"
  printf '\nexport default Deskbridge;\nexport const { version, load, setCustomer, setExternalRef, clear, on, getState, run } = Deskbridge;\n'
} > "$build/deskbridge.mjs"
cp "$here/deskbridge.d.ts" "$build/deskbridge.d.ts"
cp "$here/README.md" "$build/README.md"
cat > "$build/package.json" <<JSON
{
  "name": "@deskbridge/web-sdk",
  "version": "$version",
  "description": "The deskbridge web SDK: hands the customer's login from a company's page to the deskbridge gateway, and a fresh one whenever it asks.",
  "license": "Apache-2.0",
  "type": "module",
  "main": "./deskbridge.mjs",
  "module": "./deskbridge.mjs",
  "types": "./deskbridge.d.ts",
  "exports": {
    ".": { "types": "./deskbridge.d.ts", "import": "./deskbridge.mjs", "default": "./deskbridge.mjs" },
    "./classic": "./deskbridge.js"
  },
  "sideEffects": false,
  "files": ["deskbridge.js", "deskbridge.mjs", "deskbridge.d.ts", "README.md"]
}
JSON
cd "$build"
tarball="$(npm pack --silent --pack-destination "$here/dist")"
echo "$here/dist/$tarball"
