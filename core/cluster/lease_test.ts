import { assert, assertEquals } from "../testing/assert.ts";
import { bootTimeMs, LeaseHolder, LeaseTable } from "./lease.ts";
import { renewalIntervalMs } from "./lease_service.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

/** A leader whose term and role the test sets. */
function leaderIn(term: number | null) {
  const state = { term };
  return { state, table: new LeaseTable(() => state.term) };
}

testWithTimeout({
  name: "the host stops before the leader can restart elsewhere, for any renewal timing",
  timeoutMs: 2 * MINUTE,
}, () => {
  const leaseMs = 6_000;
  for (const rttMs of [0, 5, 200, 900]) {
    const { table } = leaderIn(3);
    table.surelyExpired("h1", leaseMs, 0); // the term starts at 0 on the leader
    const holder = new LeaseHolder();
    // Host sends at t=1000 (both clocks aligned for the test); the grant lands rttMs later.
    holder.granted(1_000, leaseMs);
    table.grant("h1", leaseMs, 1_000 + rttMs);
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

testWithTimeout(
  { name: "a new leader counts every host from its own term", timeoutMs: 2 * MINUTE },
  () => {
    const { state, table } = leaderIn(null);
    table.grant("h1", 6_000, 0); // not leading: recorded nowhere
    state.term = 4;
    assertEquals(table.surelyExpired("h1", 6_000, 10_000), false);
    assertEquals(table.surelyExpired("h1", 6_000, 17_001), true);
  },
);

testWithTimeout(
  { name: "no grant survives a quick A→B→A change of leader", timeoutMs: 2 * MINUTE },
  () => {
    const { state, table } = leaderIn(5);
    table.grant("h1", 6_000, 0);
    table.grant("h2", 6_000, 0);
    // A loses leadership to B (term 6) and wins it back (term 7) between two looks at the
    // table: a poll of "am I leader?" would see A lead throughout and keep the term-5 grants.
    state.term = 7;
    table.grant("h2", 6_000, 9_000); // renewed with the new leader
    assertEquals(table.surelyExpired("h1", 6_000, 9_000 + 7_000), false, "counted from term 7");
    assertEquals(table.surelyExpired("h1", 6_000, 9_000 + 7_001), true);
    assertEquals(table.surelyExpired("h2", 6_000, 9_000 + 7_000), false);
    // Were the term-5 grant of h1 kept, h1 would count as expired at 7 001 instead.
    assertEquals(table.surelyExpired("h1", 6_000, 7_001), false);
  },
);

testWithTimeout({ name: "a follower never declares a host expired", timeoutMs: 2 * MINUTE }, () => {
  const { state, table } = leaderIn(2);
  table.grant("h1", 6_000, 0);
  state.term = null;
  assertEquals(table.surelyExpired("h1", 6_000, 1e9), false);
});

testWithTimeout({
  name: "lowering ha.leaseMs never expires a host before it fenced itself",
  timeoutMs: 2 * MINUTE,
}, () => {
  const { table } = leaderIn(3);
  table.surelyExpired("h1", 6_000, 0);
  const holder = new LeaseHolder();
  holder.granted(1_000, 6_000); // granted under the old, longer lease
  table.grant("h1", 6_000, 1_000);
  // ha.leaseMs drops to 2 s; the host hears no more renewals.
  const hostFenced = holder.fenceAt();
  for (let t = 1_000; t <= hostFenced; t += 10) {
    assertEquals(table.surelyExpired("h1", 2_000, t), false, `at ${t}`);
  }
  // A renewal under the new lease shortens the host's lease at once, and the leader's after it.
  holder.granted(2_000, 2_000);
  assertEquals(holder.fenceAt(), 3_000);
});

testWithTimeout({
  name: "a revoked lease no longer holds; the boot clock moves forward",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const holder = new LeaseHolder();
  const t0 = bootTimeMs();
  holder.granted(t0, 60_000);
  assert(holder.holds());
  holder.revoke();
  assertEquals(holder.holds(), false);
  await new Promise((r) => setTimeout(r, 30));
  assert(bootTimeMs() >= t0 + 20);
});

Deno.test("lease renewals spread out with the number of hosts, within a quarter of the lease", () => {
  const settings = {
    "nodes.heartbeatIntervalMs": 1_000,
    "nodes.maxLeaseRenewalsPerSec": 100,
    "ha.leaseMs": 6_000,
  };
  assertEquals(renewalIntervalMs(settings, 3), 1_000, "a small cluster renews every interval");
  assertEquals(renewalIntervalMs(settings, 100), 1_000, "100 hosts: 100 renewals a second");
  assertEquals(renewalIntervalMs(settings, 120), 1_200);
  assertEquals(renewalIntervalMs(settings, 200), 1_500, "capped at a quarter of the lease");
  assertEquals(renewalIntervalMs({ ...settings, "ha.leaseMs": 20_000 }, 400), 4_000);
  // Never faster than configured, even when the lease is short.
  const slow = { ...settings, "nodes.heartbeatIntervalMs": 3_000 };
  assertEquals(renewalIntervalMs(slow, 1_000), 3_000);
});
