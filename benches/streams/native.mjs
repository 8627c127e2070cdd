// The floor for `benches/bench.py --streams`: a JavaScript Worker that calls the upstream like the
// router does and hands the upstream body to the runtime untouched (`new Response(upstream.body)`:
// workerd pumps it natively, no JavaScript runs per chunk). It writes one JSON line per request
// with `console.info`, as the router does at `LOG_LEVEL=info`, so both do the same observable work.

export default {
  async fetch(request, env) {
    const started = Date.now();
    const upstream = await fetch(`${env.UPSTREAM}/openai/v1/chat/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: request.headers.get("authorization") ?? "",
      },
      body: await request.arrayBuffer(),
    });
    console.info(JSON.stringify({
      level: "info", event: "request", status: upstream.status, duration_ms: Date.now() - started,
    }));
    return new Response(upstream.body, {
      status: upstream.status,
      headers: { "content-type": upstream.headers.get("content-type") ?? "", "cache-control": "no-cache" },
    });
  },
};
