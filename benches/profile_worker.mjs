// A V8 CPU profile of a Worker under `wrangler dev`, through its DevTools inspector, for
// `benches/bench.py --profile`. Workers freeze the clock inside a request, so timers cannot say
// where CPU goes; the sampling profiler can.
//
// Usage: node benches/profile_worker.mjs --inspector PORT --out FILE
//   Prints `PROFILING` once the profiler runs; on SIGTERM / SIGINT it stops
//   the profiler, writes the `.cpuprofile` (open it in Chrome DevTools' Performance panel) to FILE
//   and a summary to stdout: the functions with the most self time, and the share of samples that
//   fall in each top-level entry (wasm exports, JS glue, runtime). Its last line,
//   `CATEGORIES {json}`, counts the samples by the kind of frame they landed in (see `category`).

import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

// The `ws` client wrangler itself depends on: wrangler's inspector proxy refuses a WebSocket
// without an `Origin` header, which Node's built-in client cannot set.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WebSocket = createRequire(path.join(root, "package.json"))("ws");

const args = process.argv.slice(2);
let inspectorPort;
let out;
let interval = 100;
let top = 40;
for (let i = 0; i < args.length; i += 2) {
  const [flag, value] = [args[i], args[i + 1]];
  if (flag === "--inspector") inspectorPort = Number(value);
  else if (flag === "--out") out = value;
  else if (flag === "--interval-us") interval = Number(value);
  else if (flag === "--top") top = Number(value);
  else throw new Error(`unknown argument ${flag}`);
}
if (!Number.isInteger(inspectorPort) || !out) throw new Error("--inspector and --out are required");

// wrangler's inspector proxy lists the Worker as a target; take the first with a socket.
const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
const target = targets.find((t) => t.webSocketDebuggerUrl);
if (!target) throw new Error(`no debuggable target at port ${inspectorPort}: ${JSON.stringify(targets)}`);

const socket = new WebSocket(target.webSocketDebuggerUrl, { origin: "http://127.0.0.1" });
await new Promise((resolve, reject) => {
  socket.once("open", resolve);
  socket.once("error", reject);
});
let nextId = 1;
const pending = new Map();
socket.on("message", (data) => {
  const message = JSON.parse(String(data));
  const waiter = message.id !== undefined && pending.get(message.id);
  if (!waiter) return;
  pending.delete(message.id);
  if (message.error) waiter.reject(new Error(`${waiter.method}: ${JSON.stringify(message.error)}`));
  else waiter.resolve(message.result);
});
const call = (method, params = {}) =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject, method });
    socket.send(JSON.stringify({ id, method, params }));
  });

await call("Profiler.enable");
await call("Profiler.setSamplingInterval", { interval });
await call("Profiler.start");
console.log("PROFILING");

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  const { profile } = await call("Profiler.stop");
  writeFileSync(out, JSON.stringify(profile));
  console.log(summarize(profile));
  socket.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
setInterval(() => {}, 1 << 30); // stay alive until signalled

function summarize(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n) => {
    const f = n.callFrame;
    const where = f.url ? ` ${f.url.split("/").pop()}:${f.lineNumber + 1}` : "";
    return `${f.functionName || "(anonymous)"}${where}`;
  };
  const counts = new Map();
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
  const categories = { js: 0, wasm: 0, runtime: 0, gc: 0, program: 0, idle: 0 };
  for (const [id, count] of counts) categories[category(byId.get(id).callFrame)] += count;
  const self = new Map();
  const inclusive = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, count] of counts) {
    const n = byId.get(id);
    if (n.callFrame.functionName === "(idle)") {
      idle += count;
      continue;
    }
    total += count;
    self.set(name(n), (self.get(name(n)) ?? 0) + count);
    // Every distinct frame on this sample's stack gets the sample once.
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const key = name(byId.get(at));
      if (!seen.has(key)) {
        seen.add(key);
        inclusive.set(key, (inclusive.get(key) ?? 0) + count);
      }
    }
  }
  const rows = (map) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => `| ${(100 * v / total).toFixed(1)}% | ${v} | \`${k.replaceAll("|", "\\|")}\` |`);
  return [
    `samples: ${total} busy, ${idle} idle (interval ${interval} µs)`,
    "",
    "### Self time",
    "",
    "| share of busy | samples | function |",
    "|---:|---:|---|",
    ...rows(self),
    "",
    "### Inclusive time",
    "",
    "| share of busy | samples | function |",
    "|---:|---:|---|",
    ...rows(inclusive),
    "",
    `CATEGORIES ${JSON.stringify(categories)}`,
  ].join("\n");
}

// The kind of code a sample landed in: V8's own pseudo-frames (idle, `(program)`: native code
// outside any JavaScript or wasm frame, the garbage collector), wasm (its frames' URL is
// `wasm://…`), JavaScript (any other URL: the Worker's module, wasm-bindgen's glue), or a call
// into the runtime (no URL: functions the runtime implements natively, e.g. `read`, `write`).
function category(frame) {
  switch (frame.functionName) {
    case "(idle)":
      return "idle";
    case "(program)":
    case "(root)":
      return "program";
    case "(garbage collector)":
      return "gc";
  }
  if (frame.url.startsWith("wasm://")) return "wasm";
  return frame.url ? "js" : "runtime";
}
