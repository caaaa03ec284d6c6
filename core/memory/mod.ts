/**
 * Keeps a node's resident memory near what it needs.
 *
 * **Native memory.** After a burst of large answers (`vm list` of 10,000 VMs is
 * 4.7 MiB of JSON) glibc keeps the freed native buffers in the arenas of the
 * runtime's many threads: a leader measured 420 MiB resident with 66 MiB of heap
 * in use. glibc's `malloc_trim(0)` returns the free pages of every arena;
 * elsewhere (no glibc, no FFI permission) this does nothing.
 *
 * **JavaScript heap.** V8 collects old-generation garbage when the heap reaches a
 * limit it raised during earlier load, or about 8 s after the process goes idle
 * (its memory reducer). Measured with 10,000 VMs: right after 100 full lists the
 * leader held 164 MiB of heap, 38 MiB of it live, and 400 MiB resident. Flags that
 * change this (`--optimize-for-size`) act only at start-up and cost a third of
 * the create throughput, so the node itself collects when it is over a resident
 * budget and the heap holds enough garbage to be worth it.
 *
 * @module
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { log } from "../log/mod.ts";

const TRIM_EVERY_MS = 10_000;

type Libc = { symbols: { malloc_trim: (pad: bigint | number) => number }; close(): void };

/** glibc's malloc_trim through FFI; null where there is none. */
export function openLibc(): Libc | null {
  if (Deno.build.os !== "linux") return null;
  try {
    return Deno.dlopen("libc.so.6", {
      malloc_trim: { parameters: ["usize"], result: "i32" },
    }) as unknown as Libc;
  } catch {
    return null; // musl, or no --allow-ffi
  }
}

/** Trims freed memory now and every few seconds; returns a function that stops it. */
export function keepMemoryTrimmed(everyMs = TRIM_EVERY_MS): () => void {
  const libc = openLibc();
  if (!libc) {
    log.debug("malloc_trim not available: freed native memory stays with the allocator");
    return () => {};
  }
  const timer = setInterval(() => libc.symbols.malloc_trim(0), everyMs);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    libc.close();
  };
}

/** Resident size above which a node collects its garbage at once: well below bench:scale's 300 MiB goal, which a burst of lists passes in about a second. */
export const RSS_BUDGET_BYTES = 200 * 2 ** 20;
const CHECK_EVERY_MS = 250;
/** Collections are never closer than this: under sustained load V8's own schedule is cheaper. */
const MIN_GAP_MS = 1_000;
/**
 * Worth a full collection only when the heap holds at least this much garbage past what the
 * last one left live, and at least as much garbage as live data: under steady load (joins
 * streaming snapshots, a create storm) V8 collects at about that point itself, and a forced
 * collection would only add pauses. A burst (100 full lists) leaves several times the live heap.
 */
const GARBAGE_WORTH_COLLECTING_BYTES = 32 * 2 ** 20;

/** What one check decides from the process's memory and the last collection. */
export function shouldCollect(
  now: { rss: number; heapUsed: number; atMs: number },
  last: { liveHeap: number; atMs: number },
  budgetBytes = RSS_BUDGET_BYTES,
): boolean {
  return now.rss > budgetBytes &&
    now.atMs - last.atMs >= MIN_GAP_MS &&
    now.heapUsed - last.liveHeap >= Math.max(GARBAGE_WORTH_COLLECTING_BYTES, last.liveHeap);
}

/**
 * V8's full collection, made callable at run time (`--expose-gc` read by a fresh
 * context); null where the runtime refuses it.
 */
export function fullGc(): (() => void) | null {
  try {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc");
    return typeof gc === "function" ? gc as () => void : null;
  } catch {
    return null;
  }
}

/** One forced collection: how long the pause was and what it freed. */
export interface Collection {
  pauseMs: number;
  heapBeforeBytes: number;
  heapAfterBytes: number;
}

/** What {@link keepHeapWithinBudget} reads and calls; the process's own by default. */
export interface HeapControl {
  memoryUsage(): { rss: number; heapUsed: number };
  /** A full collection; null when the runtime offers none. */
  gc: (() => void) | null;
}

/**
 * Checks memory every {@link CHECK_EVERY_MS} and collects garbage (then trims
 * native memory) when {@link shouldCollect} says so; `onCollect` hears of each
 * collection. Returns a function that stops it.
 */
export function keepHeapWithinBudget(
  opts: { budgetBytes?: number; onCollect?: (c: Collection) => void; control?: HeapControl } = {},
): () => void {
  const { memoryUsage, gc } = opts.control ??
    { memoryUsage: () => Deno.memoryUsage(), gc: fullGc() };
  if (!gc) {
    log.debug("no run-time gc: the heap is collected on V8's own schedule only");
    return () => {};
  }
  const libc = openLibc();
  const last = { liveHeap: memoryUsage().heapUsed, atMs: -Infinity };
  const timer = setInterval(() => {
    const m = memoryUsage();
    const atMs = performance.now();
    if (!shouldCollect({ rss: m.rss, heapUsed: m.heapUsed, atMs }, last, opts.budgetBytes)) return;
    gc();
    libc?.symbols.malloc_trim(0);
    const after = memoryUsage().heapUsed;
    Object.assign(last, { liveHeap: after, atMs: performance.now() });
    opts.onCollect?.({
      pauseMs: last.atMs - atMs,
      heapBeforeBytes: m.heapUsed,
      heapAfterBytes: after,
    });
  }, CHECK_EVERY_MS);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    libc?.close();
  };
}
