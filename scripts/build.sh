#!/bin/sh
# Builds the Worker bundle (build/worker/) with worker-build, using only crates.io and npm:
# `wasm-bindgen-cli` and `worker-build` are installed from crates.io at exactly the versions in
# Cargo.lock, and `wasm-opt` / `esbuild` come from the npm packages pinned in package-lock.json,
# so worker-build never downloads a binary from GitHub. wrangler runs this as `[build] command`.
set -eu
cd "$(dirname "$0")/.."

# The end-to-end harness builds once, then starts several `wrangler dev` instances that must not
# rebuild (and rewrite build/) under each other's feet.
if [ -n "${TASK_ROUTER_PREBUILT:-}" ] && [ -f build/worker/shim.mjs ]; then
  exit 0
fi

lock_version() { # the version Cargo.lock pins for crate $1
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}
ensure_tool() { # $1 crate, $2 binary, $3 version
  if ! "$2" --version 2>/dev/null | grep -qE "(^| )$3\$"; then
    echo "build.sh: installing $1 $3 from crates.io" >&2
    cargo install --quiet --force "$1" --version "$3"
  fi
}

bindgen_version=$(lock_version wasm-bindgen)
worker_version=$(lock_version worker)
[ -n "$bindgen_version" ] && [ -n "$worker_version" ] || { echo "build.sh: Cargo.lock lacks wasm-bindgen or worker" >&2; exit 1; }
[ -x node_modules/.bin/wasm-opt ] || npm ci --no-audit --no-fund --silent

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
ensure_tool wasm-bindgen-cli wasm-bindgen "$bindgen_version"
ensure_tool worker-build worker-build "$worker_version"

WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
export WASM_BINDGEN_BIN WASM_OPT_BIN ESBUILD_BIN
exec worker-build --release
