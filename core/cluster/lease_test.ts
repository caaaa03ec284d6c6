import { assertEquals } from "../testing/assert.ts";
import { LeaseHolder, LeaseTable } from "./lease.ts";

Deno.test("the host stops before the leader can restart elsewhere, for any renewal timing", () => {
  const leaseMs = 6_000;
  for (const rttMs of [0, 5, 200, 900]) {
    const table = new LeaseTable();
    table.resetForNewTerm(0);
    const holder = new LeaseHolder();
    // Host sends at t=1000 (both clocks aligned for the test); the grant lands rttMs later.
    holder.granted(1_000, leaseMs);
    table.grant("h1", 1_000 + rttMs);
    let hostStops = -1;
    let leaderRestarts = -1;
    for (let t = 1_000; t < 20_000; t += 10) {
      if (hostStops < 0 && !holder.holds(t)) hostStops = t;
      if (leaderRestarts < 0 && table.surelyExpired("h1", leaseMs, t)) leaderRestarts = t;
    }
    assertEquals(
      hostStops < leaderRestarts,
      true,
      `rtt ${rttMs}: ${hostStops} vs ${leaderRestarts}`,
    );
  }
});

Deno.test("a new leader counts every host from its own election", () => {
  const table = new LeaseTable();
  table.grant("h1", 0);
  table.resetForNewTerm(10_000);
  assertEquals(table.surelyExpired("h1", 6_000, 12_000), false);
  assertEquals(table.surelyExpired("h1", 6_000, 17_001), true);
});
