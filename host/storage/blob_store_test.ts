import { createHash } from "node:crypto";
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { BlobStore } from "./blob_store.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

Deno.test({
  name: "BlobStore.ensure leaves a peer that stalls (before or during the body) for the next one",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const blob = new Uint8Array(256 * 1024).fill(9);
  const hash = sha(blob);
  const hung: ReadableStreamDefaultController<Uint8Array>[] = [];
  const silent: ((r: Response) => void)[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    // Never answers (until the test ends).
    if (path.startsWith("/silent/")) return new Promise<Response>((r) => silent.push(r));
    if (path.startsWith("/midway/")) {
      // Half the blob, then nothing more (the connection stays open).
      return new Response(
        new ReadableStream({
          start(c) {
            c.enqueue(blob.subarray(0, blob.length / 2));
            hung.push(c);
          },
        }),
      );
    }
    return new Response(blob);
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  const dir = await Deno.makeTempDir();
  const store = await new BlobStore(dir).init();
  try {
    const errors: string[] = [];
    const got = await store.ensure(hash, [
      { url: `${base}/silent`, fetch },
      { url: `${base}/midway`, fetch },
      {
        url: base,
        fetch: (u, i) => fetch(u, i).catch((e) => (errors.push(String(e)), Promise.reject(e))),
      },
    ], { stallMs: 300 });
    assertEquals(got, { sha256: hash, size: blob.length });
    assertEquals(errors, []);
    assert(await store.stat(hash));
    // Nothing half-written is left behind by the abandoned fetches.
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assertEquals(names, [hash]);
  } finally {
    for (const c of hung) {
      try {
        c.close();
      } catch { /* cancelled when the fetch gave up: as it should */ }
    }
    for (const r of silent) r(new Response("late"));
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "BlobStore.ensure names every stalled peer when none delivers",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const silent: ((r: Response) => void)[] = [];
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => new Promise<Response>((r) => silent.push(r)),
  );
  const dir = await Deno.makeTempDir();
  const store = await new BlobStore(dir).init();
  try {
    const err = await store.ensure("a".repeat(64), [
      { url: `http://127.0.0.1:${server.addr.port}/p1`, fetch },
    ], { stallMs: 200 }).then(() => null, (e: Error) => e);
    assert(err, "a fetch that never answers fails");
    assert(/p1: no data for 200 ms/.test(err.message), err.message);
  } finally {
    for (const r of silent) r(new Response("late"));
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
