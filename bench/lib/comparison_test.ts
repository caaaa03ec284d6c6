import { assertEquals } from "../../core/testing/assert.ts";
import { type Contender, interleave, medianRatios } from "./comparison.ts";
import type { LoadResult } from "./loadgen.ts";
import { summarize } from "./stats.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

function fakeLoad(writesPerSec: number, samples: number): LoadResult {
  return {
    clients: 1,
    durationMs: 1000,
    writes: samples,
    writesPerSec,
    errors: 0,
    errorSamples: [],
    latency: summarize(Array.from({ length: samples }, (_, i) => i + 1)),
  };
}

testWithTimeout({
  name: "interleave alternates novactl and the anchor, rep by rep, and keeps each rep",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const order: string[] = [];
  const contender = (system: string, rates: number[]): Contender => ({
    system,
    run: (_, rep) => {
      order.push(`${system}#${rep}`);
      return Promise.resolve(fakeLoad(rates[rep], 150));
    },
  });
  const rows = await interleave(
    [contender("novactl", [10, 30, 20]), contender("etcd", [40, 40, 100])],
    { case: "config write", clients: 1, reps: 3 },
  );
  assertEquals(order, ["novactl#0", "etcd#0", "novactl#1", "etcd#1", "novactl#2", "etcd#2"]);
  assertEquals(rows[0].writesPerSec, { median: 20, min: 10, max: 30, n: 3 });
  assertEquals(rows[0].reps.map((r) => r.writesPerSec), [10, 30, 20]);
  assertEquals(rows[0].p99Ms?.median, 149, "150 samples support a p99");
  assertEquals(medianRatios(rows, "etcd"), [
    { case: "config write", clients: 1, anchor: "etcd", ratio: 0.5 },
  ]);
});

testWithTimeout({
  name: "a repetition with fewer than 100 samples has no p99",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const rows = await interleave([{
    system: "novactl",
    run: () => Promise.resolve(fakeLoad(5, 99)),
  }], { case: "vm create", clients: 1, reps: 3 });
  assertEquals(rows[0].reps[0].p99Ms, null);
  assertEquals(rows[0].p99Ms, null);
  assertEquals(rows[0].maxMs.median, 99);
});
