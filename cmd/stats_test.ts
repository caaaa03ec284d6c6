import { assertEquals } from "../core/testing/assert.ts";
import { humanBytes, sortRows } from "./stats.ts";

Deno.test("stats CLI: sizes in powers of 1024", () => {
  assertEquals(
    [0, 512, 1536, 10 * 1024, 5.5 * 2 ** 30, null].map(humanBytes),
    ["0B", "512B", "1.5K", "10K", "5.5G", "-"],
  );
});

Deno.test("top: rows sorted by CPU or memory (biggest first) or by name", () => {
  const rows = [
    { name: "b", cpu: 5, memory: 300 },
    { name: "a", cpu: 50, memory: 100 },
    { name: "c", cpu: 5, memory: 200 },
  ];
  const names = (key: string) => sortRows(rows, key).map((r) => r.name);
  assertEquals(names("cpu"), ["a", "b", "c"]);
  assertEquals(names("mem"), ["b", "c", "a"]);
  assertEquals(names("name"), ["a", "b", "c"]);
});
