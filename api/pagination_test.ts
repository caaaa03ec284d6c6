import { assertEquals, assertThrows } from "../core/testing/assert.ts";
import { ValidationError } from "../core/errors/mod.ts";
import {
  afterOf,
  compareKeys,
  continueToken,
  isString,
  type ListSpec,
  MAX_PAGE,
  pageOfRead,
  type PageParams,
  pageQuery,
  paginate,
} from "./pagination.ts";

type Item = { name: string };
const byName: ListSpec<Item> = { list: "things", key: (i) => i.name };
const items = (names: string[]): Item[] => names.map((name) => ({ name }));

/** Every item, page by page; the pages' sizes. */
function walk<T>(all: readonly T[], limit: number, spec: ListSpec<T>) {
  const seen: T[] = [];
  const sizes: number[] = [];
  let q: PageParams = { limit: String(limit) };
  for (let i = 0; i < 1000; i++) {
    const page = paginate(all, q, spec);
    seen.push(...page.items);
    sizes.push(page.items.length);
    if (page.continue === undefined) return { seen, sizes };
    q = { limit: String(limit), continue: page.continue };
  }
  throw new Error("pages never end");
}

function field(fn: () => unknown): string | undefined {
  return assertThrows(fn, ValidationError).issues[0]?.field;
}

Deno.test("paginate: pages of 2 give every item once, in key order, the last without continue", () => {
  const all = items(["e", "a", "d", "b", "c"]);
  const { seen, sizes } = walk(all, 2, byName);
  assertEquals(seen.map((i) => i.name), ["a", "b", "c", "d", "e"]);
  assertEquals(sizes, [2, 2, 1]);
});

Deno.test("paginate: a page that ends exactly at the list's end has no continue", () => {
  const { sizes } = walk(items(["a", "b", "c", "d"]), 2, byName);
  assertEquals(sizes, [2, 2], "no empty third page");
  const one = paginate(items(["a", "b"]), { limit: "2" }, byName);
  assertEquals([one.items.length, one.continue], [2, undefined]);
});

Deno.test("paginate: without a limit, the whole list (or the list's default page)", () => {
  const all = items(["b", "a", "c"]);
  assertEquals(paginate(all, {}, byName).items.map((i) => i.name), ["a", "b", "c"]);
  assertEquals(paginate(all, {}, byName).continue, undefined);
  const page = paginate(all, {}, { ...byName, defaultLimit: 2 });
  assertEquals(page.items.map((i) => i.name), ["a", "b"]);
  assertEquals(afterOf("things", page.continue, isString), "b");
});

Deno.test("paginate: descending tuple keys (newest first), ties broken by the second part", () => {
  const ops = [
    { at: 1, id: "x" },
    { at: 3, id: "a" },
    { at: 2, id: "b" },
    { at: 3, id: "c" },
    { at: 2, id: "a" },
  ];
  const spec: ListSpec<{ at: number; id: string }> = {
    list: "ops",
    key: (o) => [o.at, o.id],
    order: "desc",
  };
  const { seen } = walk(ops, 2, spec);
  assertEquals(seen.map((o) => `${o.at}${o.id}`), ["3c", "3a", "2b", "2a", "1x"]);
});

Deno.test("paginate: an item added or removed between pages shifts nothing else", () => {
  const first = paginate(items(["a", "b", "c", "d"]), { limit: "2" }, byName);
  // "b" (the page's last) is deleted and "aa" (before the edge) created before the next page.
  const next = paginate(
    items(["a", "aa", "c", "d"]),
    { limit: "2", continue: first.continue },
    byName,
  );
  assertEquals(next.items.map((i) => i.name), ["c", "d"]);
});

Deno.test("pageOfRead: a store's read of limit+1 rows becomes a page and its token", () => {
  const spec = { list: "things", key: (i: Item) => i.name };
  const full = pageOfRead(items(["a", "b", "c"]), 2, spec);
  assertEquals(full.items.map((i) => i.name), ["a", "b"]);
  assertEquals(afterOf("things", full.continue, isString), "b");
  assertEquals(pageOfRead(items(["a", "b"]), 2, spec).continue, undefined);
});

Deno.test("tokens: a round trip, and bad or foreign tokens are 400s naming continue", () => {
  assertEquals(afterOf("vms", continueToken("vms", "web-ü1"), isString), "web-ü1");
  assertEquals(afterOf("vms", undefined, isString), undefined);
  assertEquals(field(() => afterOf("vms", "garbage!", isString)), "continue");
  assertEquals(field(() => afterOf("vms", btoa("[1,2]"), isString)), "continue");
  const images = continueToken("images", "a");
  const e = assertThrows(() => afterOf("vms", images, isString), ValidationError);
  assertEquals(e.issues[0].field, "continue");
  assertEquals(e.message.includes("images"), true, e.message);
  // The right list but a key of the wrong shape.
  assertEquals(field(() => afterOf("vms", continueToken("vms", 7), isString)), "continue");
  assertEquals(field(() => paginate(items(["a"]), { continue: "%%%" }, byName)), "continue");
});

Deno.test("pageQuery: limit is a whole number from 1 to the maximum", () => {
  for (const ok of ["1", "50", String(MAX_PAGE)]) {
    assertEquals(pageQuery.parse({ limit: ok }).limit, ok);
  }
  for (const bad of ["0", "-1", "1.5", "abc", "", String(MAX_PAGE + 1)]) {
    const r = pageQuery.safeParse({ limit: bad });
    assertEquals(r.success, false, bad);
    assertEquals(r.error?.issues[0].path, ["limit"]);
  }
});

Deno.test("compareKeys: numbers numerically, strings by code unit, tuples left to right", () => {
  assertEquals(compareKeys(2, 10) < 0, true);
  assertEquals(compareKeys("B", "a") < 0, true, "code-unit order, as SQLite's BINARY");
  assertEquals(compareKeys([1, "b"], [1, "a"]) > 0, true);
  assertEquals(compareKeys([0, "z"], [1, "a"]) < 0, true);
});
