import { assert, assertEquals } from "../../core/testing/assert.ts";
import { percentile, summarize } from "./stats.ts";
import { formatMarkdownTable, throughputRatios, toRow } from "./report.ts";

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

Deno.test("report pairs novactl with etcd per client count", () => {
  const result = (writes: number, clients: number) => ({
    clients,
    durationMs: 1000,
    writes,
    writesPerSec: writes,
    errors: 0,
    errorSamples: [],
    latency: summarize([1, 2, 3]),
  });
  const rows = [
    toRow("etcd", result(200, 16)),
    toRow("novactl", result(100, 16)),
    toRow("etcd", result(50, 1)),
  ];
  assertEquals(throughputRatios(rows), [{ clients: 16, throughputRatio: 0.5 }]);
  assert(
    formatMarkdownTable(rows).includes("| 16 | novactl | 100.0 | 2.00 | 3.00 | 3.00 | 0 | 0.50x |"),
  );
});
