// Experiment: every byte still passes through the relay before the caller sees it, but in
// batches. The upstream body is `tee()`d; one branch is piped natively into a `DigestStream` (a
// writable the runtime implements, used as a sink that keeps nothing) so the runtime keeps pulling
// and buffering the other branch, which the relay reads every BATCH_MS ms, scans, and writes to
// the response (an `IdentityTransformStream`).
import { callUpstream, scan, line, headers } from "../common.mjs";

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    const period = Number(env.BATCH_MS ?? 50);
    const upstream = await callUpstream(request, env);
    const [pulled, copy] = upstream.body.tee();
    let drained;
    if (env.DRAIN === "buffer") {
      // Through an `IdentityTransformStream`, so the branch is pulled chunk by chunk (an
      // `arrayBuffer()` of the branch itself pulls in 64 KiB reads, and the copy with it).
      const sink = new IdentityTransformStream();
      drained = Promise.all([pulled.pipeTo(sink.writable), new Response(sink.readable).arrayBuffer()]);
    } else if (env.DRAIN === "deflate") {
      // The same, through the runtime's (native) `CompressionStream`: what is kept is deflated.
      const sink = new CompressionStream("deflate-raw");
      drained = Promise.all([pulled.pipeTo(sink.writable), new Response(sink.readable).arrayBuffer()]);
    } else {
      drained = pulled.pipeTo(new crypto.DigestStream("MD5"));
    }
    drained = drained.catch(() => {});
    const { readable, writable } = new IdentityTransformStream();
    const seen = { reads: 0 };
    ctx.waitUntil((async () => {
      const writer = writable.getWriter();
      const reader = copy.getReader({ mode: "byob" });
      for (;;) {
        const { done, value } = await reader.read(new Uint8Array(1 << 17));
        if (done) break;
        seen.reads++;
        scan(value, seen);
        await writer.write(value);
        await new Promise((resolve) => setTimeout(resolve, period));
      }
      await writer.close();
      await drained;
      line(started, upstream, seen);
    })());
    return new Response(readable, { status: upstream.status, headers: headers(upstream) });
  },
};
