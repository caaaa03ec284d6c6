import { assertEquals } from "../../core/testing/assert.ts";
import { longestGap, pingSeqs, repliesAfter } from "./net_migration.ts";

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
