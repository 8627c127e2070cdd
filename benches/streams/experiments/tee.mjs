// Experiment: the upstream body `tee()`d; one branch piped natively into the response (an
// `IdentityTransformStream`, `preventClose`), the other read in batches every PERIOD ms (the
// runtime buffers it meanwhile) and scanned, so the relay sees every byte, later.
import { callUpstream, scan, line, headers } from "../common.mjs";

const PERIOD_MS = 100;

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const upstream = await callUpstream(request, env);
    const [toCaller, toWatch] = upstream.body.tee();
    const { readable, writable } = new IdentityTransformStream();
    const piped = toCaller.pipeTo(writable, { preventClose: true });
    const seen = { reads: 0 };
    const watch = (async () => {
      const reader = toWatch.getReader({ mode: "byob" });
      let buffer = new ArrayBuffer(1 << 17);
      for (;;) {
        const { done, value } = await reader.read(new Uint8Array(buffer));
        if (done) return;
        buffer = value.buffer;
        seen.reads++;
        scan(value, seen);
        await new Promise((resolve) => setTimeout(resolve, PERIOD_MS));
      }
    })();
    ctx.waitUntil(Promise.all([piped, watch]).then(async () => {
      const writer = writable.getWriter();
      await writer.close();
      line(started, upstream, seen);
    }));
    return new Response(readable, { status: upstream.status, headers: headers(upstream) });
  },
};
