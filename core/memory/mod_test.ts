import { assert, assertEquals } from "../testing/assert.ts";
import {
  type Collection,
  fullGc,
  keepHeapWithinBudget,
  keepMemoryTrimmed,
  openLibc,
  shouldCollect,
} from "./mod.ts";

Deno.test("memory: on glibc Linux, malloc_trim is reachable and returns freed pages", () => {
  const libc = openLibc();
  assert(libc, "libc.so.6 with malloc_trim (the nodes this project ships for run on glibc)");
  // A freed 64 MiB native buffer: malloc_trim answers 1 when it released memory.
  let buf: Uint8Array | null = new Uint8Array(64 << 20).fill(1);
  assert(buf[buf.length - 1] === 1);
  buf = null;
  const released = libc.symbols.malloc_trim(0);
  assert(released === 0 || released === 1, `malloc_trim answered ${released}`);
  libc.close();
  keepMemoryTrimmed(50)(); // starts and stops without leaving a timer or the library open
});

Deno.test("memory: a collection needs all three: over budget, the gap since the last, and garbage (≥ 32 MiB and ≥ the live heap)", () => {
  const MiB = 2 ** 20;
  const last = { liveHeap: 40 * MiB, atMs: 0 };
  const over = { rss: 300 * MiB, heapUsed: 100 * MiB, atMs: 10_000 };
  assert(shouldCollect(over, last, 256 * MiB));
  assert(!shouldCollect({ ...over, rss: 200 * MiB }, last, 256 * MiB), "under the budget");
  assert(!shouldCollect({ ...over, atMs: 500 }, last, 256 * MiB), "too soon after the last");
  assert(!shouldCollect({ ...over, heapUsed: 60 * MiB }, last, 256 * MiB), "too little garbage");
  assert(
    !shouldCollect({ ...over, heapUsed: 180 * MiB }, { ...last, liveHeap: 100 * MiB }, 256 * MiB),
    "less garbage than live data: V8's own schedule",
  );
  assert(
    shouldCollect({ ...over, heapUsed: 210 * MiB }, { ...last, liveHeap: 100 * MiB }, 256 * MiB),
  );
});

Deno.test("memory: the run-time full collection frees garbage V8 has not collected yet", () => {
  const gc = fullGc();
  assert(gc, "gc is reachable at run time (--expose-gc through node:v8, read by a new context)");
  let junk: string[] | null = [];
  for (let i = 0; i < 300_000; i++) junk.push("x".repeat(200) + i);
  junk = null;
  const before = Deno.memoryUsage().heapUsed;
  gc();
  const after = Deno.memoryUsage().heapUsed;
  assert(after < before - 32 * 2 ** 20, `freed: ${before} -> ${after} bytes`);
});

Deno.test("memory: over its budget with garbage the node collects, then waits before the next", async () => {
  const MiB = 2 ** 20;
  const usage = { rss: 100 * MiB, heapUsed: 40 * MiB };
  let collections = 0;
  const control = {
    memoryUsage: () => ({ ...usage }),
    gc: () => {
      collections++;
      usage.heapUsed = 40 * MiB;
    },
  };
  const seen: Collection[] = [];
  const stop = keepHeapWithinBudget({
    budgetBytes: 256 * MiB,
    control,
    onCollect: (c) => seen.push(c),
  });
  const waitMs = (ms: number) => new Promise((r) => setTimeout(r, ms));
  try {
    usage.heapUsed = 200 * MiB; // garbage, but under the budget
    await waitMs(600);
    assertEquals(collections, 0, "under the budget: V8's own schedule");
    usage.rss = 400 * MiB;
    for (let i = 0; i < 40 && collections === 0; i++) await waitMs(50);
    assertEquals(collections, 1, "over the budget with garbage: one collection");
    assertEquals(seen[0].heapBeforeBytes - seen[0].heapAfterBytes, 160 * MiB);
    usage.heapUsed = 200 * MiB; // garbage again at once
    await waitMs(500);
    assertEquals(collections, 1, "not again within the gap");
  } finally {
    stop();
  }
});
