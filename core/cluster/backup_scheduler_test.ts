/**
 * Schedules' pure parts: cron expressions checked and their last due time
 * found (by cron-parser), and retention that keeps every kept backup's chain.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import type { BackupRecord } from "../fsm/mod.ts";
import { checkCron, lastDue, retained } from "./backup_scheduler.ts";

const DAY = 86_400_000;
const T0 = Date.parse("2026-03-02T00:00:00Z"); // a Monday

function b(id: string, at: number, parent: string | null): BackupRecord {
  return {
    id,
    vm: "web1",
    target: "t1",
    kind: parent ? "incremental" : "full",
    parent,
    chain: id,
    dir: "web1",
    manifest: "",
    manifestSha256: "",
    disks: [],
    fullReason: null,
    node: "h1",
    createdAt: at,
  };
}

Deno.test("cron: five fields checked, the last due time is at or before now (UTC)", () => {
  assertEquals(checkCron("0 2 * * *"), null);
  assert(checkCron("61 * * * *")?.startsWith("not a cron expression"));
  assert(checkCron("* * * *")?.startsWith("five fields"));
  assertEquals(lastDue("0 2 * * *", T0 + 3 * 3_600_000), T0 + 2 * 3_600_000);
  assertEquals(lastDue("0 2 * * *", T0 + 2 * 3_600_000), T0 + 2 * 3_600_000);
  assertEquals(lastDue("0 2 * * *", T0 + 3_600_000), T0 - DAY + 2 * 3_600_000);
});

Deno.test("retention: last, daily and weekly kept, with every backup a kept one builds on", () => {
  // Two chains: a full on day 0 and incrementals on days 1-6; a full on day 7, incrementals after.
  const list: BackupRecord[] = [];
  for (let d = 0; d < 14; d++) {
    const id = `d${d}`;
    list.push(b(id, T0 + d * DAY, d % 7 === 0 ? null : `d${d - 1}`));
  }
  // The newest 2: d13 builds on d12 … d7: the whole second chain stays, the first goes.
  assertEquals(
    [...retained(list, { keepLast: 2, keepDaily: 0, keepWeekly: 0 })].sort(),
    ["d10", "d11", "d12", "d13", "d7", "d8", "d9"],
  );
  // Weekly: the newest of each of the two weeks: d13 and d6 (and their chains).
  const weekly = retained(list, { keepLast: 0, keepDaily: 0, keepWeekly: 2 });
  assertEquals(weekly.size, 14);
  // Nothing asked: nothing kept.
  assertEquals(retained(list, { keepLast: 0, keepDaily: 0, keepWeekly: 0 }).size, 0);
  // Two a day on one day: daily keeps the newest of that day only (and its parent chain).
  const sameDay = [b("a", T0, null), b("b", T0 + 1000, null)];
  assertEquals([...retained(sameDay, { keepLast: 0, keepDaily: 1, keepWeekly: 0 })], ["b"]);
});
