// Experiment: a standard `TransformStream` whose `transform` is one synchronous call per chunk
// (scan, enqueue the same chunk), the upstream body piped through it.
import { callUpstream, scan, line, headers } from "../common.mjs";

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const upstream = await callUpstream(request, env);
    const seen = {};
    const ts = new TransformStream({
      transform(chunk, controller) {
        scan(chunk, seen);
        controller.enqueue(chunk);
      },
    });
    ctx.waitUntil(upstream.body.pipeTo(ts.writable).then(() => line(started, upstream, seen)));
    return new Response(ts.readable, { status: upstream.status, headers: headers(upstream) });
  },
};
