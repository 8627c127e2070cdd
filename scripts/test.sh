#!/bin/sh
# The one test command (`npm test`): lint, then every test — native unit and table tests, and
# the end-to-end suites that run the real Worker under `wrangler dev` against a fake Groq on
# 127.0.0.1 and drive it with the official OpenAI and Groq Python SDKs.
set -eu
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false

[ -x node_modules/.bin/wrangler ] || npm ci --no-audit --no-fund
sh scripts/node.sh # Node 22.12+ for wrangler, when the machine's is older
python3 -c "import openai, groq" 2>/dev/null || python3 -m pip install --quiet -r tests/sdk/requirements.txt
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings
cargo test --all-targets
