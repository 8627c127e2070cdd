// Shared by the `--streams` Workers: the upstream call, the request line, the answer's headers,
// and (for the experimental relays) a byte scan for `[DONE]`, `"error"`, `"usage"` in plain JS.

export async function callUpstream(request, env) {
  return fetch(`${env.UPSTREAM}/openai/v1/chat/completions`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: request.headers.get("authorization") ?? "",
    },
    body: await request.arrayBuffer(),
  });
}

const enc = new TextEncoder();
const DONE = enc.encode("data: [DONE]");
const ERROR = enc.encode('"error"');
const USAGE = enc.encode('"usage"');

function has(hay, needle) {
  const first = needle[0];
  outer: for (let i = hay.indexOf(first); i >= 0 && i + needle.length <= hay.length; i = hay.indexOf(first, i + 1)) {
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

export function scan(chunk, seen) {
  if (has(chunk, DONE)) seen.done = true;
  if (has(chunk, ERROR)) seen.error = true;
  if (has(chunk, USAGE)) seen.usage = true;
}

export function line(started, upstream, extra) {
  console.info(JSON.stringify({
    level: "info", event: "request", status: upstream.status, duration_ms: Date.now() - started, ...extra,
  }));
}

export const headers = (upstream) => ({
  "content-type": upstream.headers.get("content-type") ?? "", "cache-control": "no-cache",
});
