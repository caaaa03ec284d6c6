import { assertEquals } from "../../core/testing/assert.ts";
import { kernelTrouble, longestGap, pingSeqs, repliesAfter } from "./net_migration.ts";

const line = (seq: number) => `64 bytes from 10.9.0.11: seq=${seq} ttl=64 time=1.2 ms\n`;

Deno.test("ping loss: the sequence numbers never answered after the window's start", () => {
  const text = [1, 2, 3, 4, 5, 9, 10, 12, 13].map(line).join("") + "NOVACTL-COUNTER 7\n";
  assertEquals(pingSeqs(text, "10.9.0.11"), [1, 2, 3, 4, 5, 9, 10, 12, 13]);
  assertEquals(pingSeqs(text, "10.9.0.1"), [], "another peer's replies do not count");
  const r = repliesAfter(text, "10.9.0.11", 4);
  assertEquals(r, { answered: [5, 9, 10, 12, 13], lost: [6, 7, 8, 11] });
  assertEquals(longestGap(r.lost), 3);
  assertEquals(longestGap([]), 0);
  // ping restarted (seq from 0): only what follows the last line with the window's start counts.
  const restarted = [7, 8].map(line).join("") + [0, 1, 2].map(line).join("");
  assertEquals(repliesAfter(restarted, "10.9.0.11", 8).answered, []);
});

Deno.test("a guest kernel's lockups, oopses and stalls are found on its console; pings are not", () => {
  const text = [
    "64 bytes from 10.94.0.11: seq=3 ttl=64 time=1.2 ms",
    "NOVACTL-COUNTER 9",
    "[   36.533422] watchdog: BUG: soft lockup - CPU#0 stuck for 27s! [kworker/0:2:44]",
    "[   40.1] Oops: 0000 [#1] PREEMPT SMP NOPTI",
    "[   41.0] rcu: INFO: rcu_preempt self-detected stall on CPU",
    "[   42.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
  ].join("\n");
  assertEquals(kernelTrouble(text).length, 4);
  assertEquals(kernelTrouble("64 bytes from 10.94.0.11: seq=4 ttl=64\nudhcpc: lease obtained"), []);
});
