// Experiment: the upstream body piped natively (`pipeTo`, kj to kj) into an
// `IdentityTransformStream` with `preventClose`, so the relay could still write a last event
// after the pipe ends; the end is awaited, nothing looks at the bytes.
import { callUpstream, line, headers } from "../common.mjs";

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const upstream = await callUpstream(request, env);
    const { readable, writable } = new IdentityTransformStream();
    ctx.waitUntil(upstream.body.pipeTo(writable, { preventClose: true }).then(async () => {
      const writer = writable.getWriter();
      await writer.close();
      line(started, upstream, {});
    }));
    return new Response(readable, { status: upstream.status, headers: headers(upstream) });
  },
};
