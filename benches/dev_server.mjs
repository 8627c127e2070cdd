// `wrangler dev` without its DevTools inspector, for `benches/bench.py --no-inspector`.
//
// The CLI always attaches an inspector to the Worker; under load workerd then sends four
// `Network.*` events per outbound fetch and one per `console.log` to wrangler's
// InspectorProxyWorker, which forwards each to wrangler's node process as an HTTP request and
// writes it to the debug log. That costs more CPU than the Worker itself. This starts the same
// dev server through wrangler's own API (`unstable_startWorker`, what `wrangler dev` runs), with
// `dev.inspector: false`, so the Worker runs as under `wrangler dev` minus that traffic.
//
// Usage: node benches/dev_server.mjs --config PATH --port N [--var KEY:VALUE]...
// Prints `READY <url>` once it serves; stops on SIGTERM / SIGINT.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { unstable_startWorker } = createRequire(path.join(root, "package.json"))("wrangler");

const args = process.argv.slice(2);
let config;
let port;
const bindings = {};
for (let i = 0; i < args.length; i += 2) {
  const [flag, value] = [args[i], args[i + 1]];
  if (value === undefined) throw new Error(`${flag} needs a value`);
  if (flag === "--config") config = value;
  else if (flag === "--port") port = Number(value);
  else if (flag === "--var") {
    // Like `wrangler dev --var`: split at the first `:`, the value stays a plain string.
    const at = value.indexOf(":");
    if (at <= 0) throw new Error(`--var ${value}: expected KEY:VALUE`);
    bindings[value.slice(0, at)] = { type: "plain_text", value: value.slice(at + 1) };
  } else throw new Error(`unknown argument ${flag}`);
}
if (!config || !Number.isInteger(port)) throw new Error("--config and --port are required");

const worker = await unstable_startWorker({
  config,
  bindings,
  dev: {
    server: { hostname: "127.0.0.1", port },
    inspector: false,
    logLevel: "log",
    watch: false,
  },
});
await worker.ready;
console.log(`READY ${await worker.url}`);

const stop = async () => {
  await worker.dispose().catch(() => {});
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
