import { assertEquals, assertThrows } from "../../core/testing/assert.ts";
import { ValidationError } from "../../core/errors/mod.ts";
import { COARSE, FINE } from "./history.ts";
import { historyWindow } from "./query.ts";

const NOW = 1_700_000_000_000;

Deno.test("query: since and step pick the ring and the window", () => {
  assertEquals(historyWindow({}, NOW), {
    ring: FINE,
    from: NOW - 3_600_000,
    to: NOW,
    stepMs: 10_000,
    step: "10s",
  });
  assertEquals(historyWindow({ since: "24h" }, NOW).step, "5m");
  assertEquals(historyWindow({ since: "2h", step: "1m" }, NOW).stepMs, 60_000);
  const month = historyWindow({ since: "30d" }, NOW);
  assertEquals([month.ring, month.step], [COARSE, "6h"]);
});

Deno.test("query: bad since or step is a ValidationError naming the field", () => {
  const field = (q: { since?: string; step?: string }) => {
    const err = assertThrows(() => historyWindow(q, NOW), ValidationError);
    return (err.details as { fields: { field: string }[] }).fields[0].field;
  };
  assertEquals(field({ since: "soon" }), "since");
  assertEquals(field({ since: "0h" }), "since");
  assertEquals(field({ since: "31d" }), "since");
  assertEquals(field({ step: "7s" }), "step");
  assertEquals(field({ since: "2d", step: "10s" }), "step");
});
