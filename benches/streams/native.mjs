// The floor for `benches/bench.py --streams`: a JavaScript Worker that calls the upstream like the
// router does and hands the upstream body to the runtime untouched (`new Response(upstream.body)`:
// workerd pumps it natively, no JavaScript runs per chunk). It writes one JSON line per request
// with `console.info`, as the router does at `LOG_LEVEL=info`, so both do the same observable work.

import { callUpstream, line, headers } from "./common.mjs";

export default {
  async fetch(request, env) {
    const started = Date.now();
    const upstream = await callUpstream(request, env);
    line(started, upstream);
    return new Response(upstream.body, { status: upstream.status, headers: headers(upstream) });
  },
};
