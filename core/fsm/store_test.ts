import { DatabaseSync } from "node:sqlite";
import { assertEquals } from "../testing/assert.ts";
import { RecordCache, Store } from "./store.ts";

Deno.test("RecordCache: reads once per key, forgets on write, drops the oldest past its bound", () => {
  const s = new Store(new DatabaseSync(":memory:"));
  const cache = new RecordCache<{ v: number }>(2);
  let reads = 0;
  const read = (v: number) => () => (reads++, { v });
  assertEquals(cache.get(s, "a", read(1)), { v: 1 });
  assertEquals(cache.get(s, "a", read(2)), { v: 1 });
  assertEquals(reads, 1);
  cache.forget(s, "a");
  assertEquals(cache.get(s, "a", read(3)), { v: 3 });
  cache.get(s, "b", read(4));
  cache.get(s, "c", read(5)); // a, the oldest, goes
  assertEquals(cache.get(s, "a", read(6)), { v: 6 });
  assertEquals(reads, 5);
  s.dropCaches();
  assertEquals(cache.get(s, "b", read(7)), { v: 7 });
});
