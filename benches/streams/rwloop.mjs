// `benches/bench.py --streams`: a JavaScript Worker relaying the upstream body with a `read()` /
// `write()` loop into an `IdentityTransformStream` (the response body), each chunk entering
// JavaScript on its way: what any relay that looks at every chunk through the stream API pays.
// Like the router, it writes its one JSON line per request when the stream has ended.

import { callUpstream, line, headers } from "./common.mjs";

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const upstream = await callUpstream(request, env);
    const { readable, writable } = new IdentityTransformStream();
    ctx.waitUntil((async () => {
      const reader = upstream.body.getReader();
      const writer = writable.getWriter();
      let bytes = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.byteLength;
        await writer.write(value);
      }
      await writer.close();
      line(started, upstream, { bytes });
    })());
    return new Response(readable, { status: upstream.status, headers: headers(upstream) });
  },
};
