import { assert } from "../testing/assert.ts";
import { fullCollector, keepHeapNearLive } from "./heap.ts";

Deno.test("heap: garbage past twice the live heap is collected by the next check", async () => {
  assert(fullCollector(), "V8's full collection is reachable through node:v8 and node:vm");
  let freed = 0;
  const stop = keepHeapNearLive({
    everyMs: 50,
    floorBytes: 16 << 20,
    onCollected: (n) => freed += n,
  });
  try {
    // ~100 MiB of short-lived objects, dropped at once: the check must find and collect them.
    let junk: { i: number; s: string }[] = [];
    for (let i = 0; i < 1_000_000; i++) junk.push({ i, s: `item ${i}` });
    const grown = Deno.memoryUsage().heapUsed;
    junk = [];
    for (let i = 0; i < 40 && freed === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert(freed > 32 << 20, `collected ${freed >> 20} MiB of ${grown >> 20} MiB in use`);
    assert(Deno.memoryUsage().heapUsed < grown / 2, "the heap in use fell back");
    assert(junk.length === 0);
  } finally {
    stop();
  }
});
