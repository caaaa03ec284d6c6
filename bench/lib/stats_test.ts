import { assert, assertEquals } from "../../core/testing/assert.ts";
import { percentile, summarize } from "./stats.ts";

Deno.test("percentile uses nearest rank", () => {
  const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
  assertEquals(percentile(sorted, 50), 50);
  assertEquals(percentile(sorted, 99), 99);
  assertEquals(percentile(sorted, 100), 100);
  assertEquals(percentile([7], 99), 7);
  assert(Number.isNaN(percentile([], 50)));
});

Deno.test("summarize sorts numerically, not lexically", () => {
  const summary = summarize([10, 9, 100, 2]);
  assertEquals(summary.count, 4);
  assertEquals(summary.p50Ms, 9);
  assertEquals(summary.maxMs, 100);
  assertEquals(summary.meanMs, 30.25);
});
