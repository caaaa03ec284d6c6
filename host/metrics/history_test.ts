import { assert, assertEquals } from "../../core/testing/assert.ts";
import { COARSE, FINE, MetricsHistory, spanMs } from "./history.ts";
import { combine, counterRate, type FieldKind } from "./samples.ts";

const KINDS: Record<string, FieldKind> = { cpu: "rate", mem: "gauge" };

Deno.test("samples: counter rates, and a reset (QEMU restarted) never goes negative", () => {
  assertEquals(counterRate(100, 150, 10), 5);
  assertEquals(counterRate(1_000, 30, 10), 3, "after a reset the reading is what happened since");
  assertEquals(counterRate(5, 5, 0), 0);
});

Deno.test("samples: rates average, gauges keep their last non-null value", () => {
  assertEquals(
    combine([{ cpu: 10, mem: 1 }, { cpu: 30, mem: 2 }, { cpu: 20, mem: null }], KINDS),
    { cpu: 20, mem: 2 },
  );
  assertEquals(combine([], KINDS), { cpu: null, mem: null });
});

Deno.test("history: the 10-second ring wraps around and never holds more rows than slots", () => {
  const h = new MetricsHistory(":memory:");
  const t0 = 1_700_000_000_000;
  const n = FINE.slots + 500;
  for (let i = 0; i < n; i++) h.record("vm:a", t0 + i * FINE.stepMs, { cpu: i, mem: i }, KINDS);
  assertEquals(h.rowCount(FINE), FINE.slots);
  // The oldest 500 points were overwritten: the first one left is number 500.
  const points = h.query("vm:a", {
    ring: FINE,
    from: 0,
    to: t0 + n * FINE.stepMs,
    stepMs: FINE.stepMs,
  }, KINDS);
  assertEquals(points.length, FINE.slots);
  assertEquals(points[0].fields.cpu, 500);
  assertEquals(points.at(-1)!.fields.cpu, n - 1);
  h.close();
});

Deno.test("history: 5-minute points are fed from the 10-second samples", () => {
  const h = new MetricsHistory(":memory:");
  const t0 = Math.floor(1_700_000_000_000 / COARSE.stepMs) * COARSE.stepMs;
  // Two whole 5-minute intervals (30 samples each) and the first sample of a third.
  for (let i = 0; i <= 60; i++) {
    h.record("host", t0 + i * FINE.stepMs, { cpu: i < 30 ? 10 : 50, mem: i }, KINDS);
  }
  const coarse = h.query(
    "host",
    { ring: COARSE, from: t0, to: t0 + 3 * COARSE.stepMs, stepMs: COARSE.stepMs },
    KINDS,
  );
  assertEquals(coarse, [
    { t: t0, fields: { cpu: 10, mem: 29 } },
    { t: t0 + COARSE.stepMs, fields: { cpu: 50, mem: 59 } },
  ]);
  // Ending the series writes its open interval.
  h.endSeries("host");
  assertEquals(h.rowCount(COARSE), 3);
  h.close();
});

Deno.test("history: a coarser step combines the ring's points; series are apart", () => {
  const h = new MetricsHistory(":memory:");
  const t0 = 1_700_000_000_000 - (1_700_000_000_000 % 60_000);
  for (let i = 0; i < 12; i++) {
    h.record("vm:a", t0 + i * FINE.stepMs, { cpu: i % 6 === 0 ? 60 : 0, mem: i }, KINDS);
    h.record("vm:b", t0 + i * FINE.stepMs, { cpu: 1, mem: 1 }, KINDS);
  }
  const minutes = h.query("vm:a", {
    ring: FINE,
    from: t0,
    to: t0 + 120_000,
    stepMs: 60_000,
  }, KINDS);
  assertEquals(minutes, [
    { t: t0, fields: { cpu: 10, mem: 5 } },
    { t: t0 + 60_000, fields: { cpu: 10, mem: 11 } },
  ]);
  h.close();
});

Deno.test("history: prune drops what is older than each ring's span (a VM that left)", () => {
  const h = new MetricsHistory(":memory:");
  const t0 = 1_700_000_000_000;
  h.record("vm:gone", t0, { cpu: 1, mem: 1 }, KINDS);
  h.endSeries("vm:gone");
  h.record("vm:here", t0 + spanMs(FINE), { cpu: 1, mem: 1 }, KINDS);
  h.prune(t0 + spanMs(FINE) + 1);
  assertEquals(h.rowCount(FINE), 1);
  assert(h.rowCount(COARSE) >= 1, "the 5-minute ring keeps 30 days");
  h.prune(t0 + spanMs(COARSE) + 1);
  assertEquals(h.rowCount(COARSE), 0);
  h.close();
});

Deno.test("history: its file is private to the node's user (it names the VMs)", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const h = new MetricsHistory(`${dir}/metrics.db`);
    h.record("vm:a", 1_700_000_000_000, { cpu: 1, mem: 1 }, KINDS);
    h.close();
    assertEquals((Deno.statSync(`${dir}/metrics.db`).mode ?? 0) & 0o777, 0o600);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
