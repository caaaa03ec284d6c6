import { assert, assertEquals } from "../../core/testing/assert.ts";
import { percentile, summarize } from "./stats.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

testWithTimeout({ name: "percentile uses nearest rank", timeoutMs: 2 * MINUTE }, () => {
  const sorted = Array.from({ length: 100 }, (_, i) => i + 1);
  assertEquals(percentile(sorted, 50), 50);
  assertEquals(percentile(sorted, 99), 99);
  assertEquals(percentile(sorted, 100), 100);
  assertEquals(percentile([7], 99), 7);
  assert(Number.isNaN(percentile([], 50)));
});

testWithTimeout(
  { name: "summarize sorts numerically, not lexically", timeoutMs: 2 * MINUTE },
  () => {
    const summary = summarize([10, 9, 100, 2]);
    assertEquals(summary.count, 4);
    assertEquals(summary.p50Ms, 9);
    assertEquals(summary.maxMs, 100);
    assertEquals(summary.meanMs, 30.25);
  },
);
