/** bench:events' pure helpers: event-id order, the exactly-once check, /proc's VmRSS. */
import { assertEquals } from "../core/testing/assert.ts";
import { checkDelivery, compareIds, parseId, vmRssKiB } from "./events_bench.ts";

Deno.test("event ids: parsed and ordered by Raft index, then n", () => {
  assertEquals(parseId("1042-3"), [1042, 3]);
  assertEquals(parseId("x-1"), null);
  assertEquals(compareIds("9-5", "10-0") < 0, true);
  assertEquals(compareIds("10-1", "10-0") > 0, true);
  assertEquals(compareIds("10-1", "10-1"), 0);
});

Deno.test("exactly once: a complete, ordered delivery passes; later ids are not judged", () => {
  const c = checkDelivery(["5-0", "5-1", "7-0"], ["5-0", "5-1", "7-0", "8-0"]);
  assertEquals(c, {
    expected: 3,
    delivered: 3,
    missing: [],
    duplicates: [],
    unexpected: [],
    outOfOrder: 0,
  });
});

Deno.test("exactly once: losses, duplicates, strangers and disorder are counted", () => {
  const c = checkDelivery(["5-0", "5-1", "7-0", "9-0"], ["5-1", "5-0", "5-1", "6-0", "9-0", "9-0"]);
  assertEquals(c.missing, ["7-0"]);
  assertEquals(c.duplicates, ["5-1", "9-0"]);
  assertEquals(c.unexpected, ["6-0"]);
  assertEquals(c.outOfOrder, 2); // 5-1 → 5-0, 9-0 → 9-0
  assertEquals(c.delivered, 6);
});

Deno.test("VmRSS is read from /proc/PID/status in KiB", () => {
  assertEquals(vmRssKiB("Name:\tdeno\nVmRSS:\t  123456 kB\nRssAnon:\t1 kB\n"), 123456);
  assertEquals(Number.isNaN(vmRssKiB("Name:\tdeno\n")), true);
});
