/**
 * Every list answers `{"<plural>": [...], "continue"?: "..."}` and pages with `?limit=` and
 * `?continue=` (api/pagination.ts), over the real app and a real one-node cluster.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import type { AuditInput } from "../core/fsm/mod.ts";
import { fieldsOf, startTestApp, type TestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

/** Walks a list page by page with `?limit=limit`, the answers' keys and every page's size. */
async function walk(
  t: TestApp,
  path: string,
  key: string,
  limit: number,
): Promise<{ items: Record<string, unknown>[]; sizes: number[] }> {
  const items: Record<string, unknown>[] = [];
  const sizes: number[] = [];
  let token: string | undefined;
  const sep = path.includes("?") ? "&" : "?";
  for (let i = 0; i < 100; i++) {
    const more = token === undefined ? "" : `&continue=${encodeURIComponent(token)}`;
    const r = await t.call("GET", `${path}${sep}limit=${limit}${more}`, { token: t.tokens.admin });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    const keys = Object.keys(r.body).sort();
    assertEquals(keys, r.body.continue === undefined ? [key] : ["continue", key].sort(), path);
    items.push(...r.body[key]);
    sizes.push(r.body[key].length);
    token = r.body.continue;
    if (token === undefined) return { items, sizes };
  }
  throw new Error(`${path}: pages never end`);
}

const auditRecord = (n: number, at: number): AuditInput => ({
  at,
  principal: "pager",
  role: "admin",
  source: "127.0.0.1",
  node: "n1",
  requestId: `r${n}`,
  method: "POST",
  route: "/api/v1/test",
  path: `/api/v1/test/${n}`,
  resource: `test/t${n}`,
  code: 200,
  ms: 1,
});

testWithTimeout({ name: "API: lists page with limit and continue", ...opts }, async (t) => {
  const app = await startTestApp();
  const { c, call, tokens } = app;
  try {
    await c.addHost("n2"); // two hosts: a page of one is a cut list
    const at = Date.now();
    for (let i = 0; i < 7; i++) {
      await c.node.propose({
        op: "image.create",
        image: {
          name: `img${i}`,
          kind: "kernel",
          kernel: { sha256: String(i).repeat(64), size: 1 },
          sources: ["n1"],
        },
        by: "test",
        at,
      });
    }
    // Operations and audit records created in the same millisecond: the page edge falls
    // inside a run of equal times, where only the second part of the key orders them.
    for (let i = 0; i < 11; i++) {
      await c.node.propose({
        op: "operation.create",
        operation: {
          id: `op-${i}`,
          kind: "migrate",
          target: "x",
          runner: "n1",
          params: {},
          by: "t",
        },
        at: at - (i % 3),
      });
    }
    const records = Array.from({ length: 13 }, (_, i) => auditRecord(i, at - (i % 4)));
    await c.node.propose({ op: "audit.append", records, at });

    await t.step("images: pages of 3 give every image once, in name order", async () => {
      const whole = await call("GET", "/api/v1/images", { token: tokens.viewer });
      const names = whole.body.images.map((i: { name: string }) => i.name) as string[];
      assertEquals(whole.body.continue, undefined, "no limit: the whole list");
      assertEquals(names.length, 8, "the test cluster's image and seven more");
      assertEquals(names, [...names].sort());
      const { items, sizes } = await walk(app, "/api/v1/images", "images", 3);
      assertEquals(items.map((i) => i.name), names);
      assertEquals(sizes, [3, 3, 2]);
    });

    await t.step("operations: pages of 4, newest first, every operation once", async () => {
      const { items, sizes } = await walk(app, "/api/v1/operations", "operations", 4);
      const ids = items.map((o) => o.id as string);
      assertEquals(ids.length, 11);
      assertEquals(new Set(ids).size, 11, "each once");
      const times = items.map((o) => Date.parse(o.createdAt as string));
      assertEquals(times, [...times].sort((a, b) => b - a), "newest first");
      assertEquals(sizes, [4, 4, 3]);
    });

    await t.step("audit: pages of 5 with a filter, every record once, newest first", async () => {
      const { items } = await walk(app, "/api/v1/audit?principal=pager", "entries", 5);
      assertEquals(items.map((e) => e.requestId).sort(), records.map((r) => r.requestId).sort());
      const times = items.map((e) => e.at as number);
      assertEquals(times, [...times].sort((a, b) => b - a), "newest first");
    });

    await t.step("a list's last full page has no continue (no empty page after it)", async () => {
      const { sizes } = await walk(app, "/api/v1/images", "images", 8);
      assertEquals(sizes, [8]);
    });

    await t.step("a token of one list is refused by another, naming continue", async () => {
      const first = await call("GET", "/api/v1/images?limit=1", { token: tokens.viewer });
      const token = encodeURIComponent(first.body.continue);
      const r = await call("GET", `/api/v1/operations?continue=${token}`, { token: tokens.admin });
      assertEquals(r.status, 400);
      assertEquals(fieldsOf(r), ["continue"]);
    });

    await t.step("every list refuses a bad limit or continue, naming the field", async () => {
      const doc = (await call("GET", "/api/v1/openapi.json")).body as {
        paths: Record<string, { get?: { parameters?: { name: string; in: string }[] } }>;
      };
      const lists = Object.entries(doc.paths)
        .filter(([p, ops]) =>
          !p.includes("{") &&
          ops.get?.parameters?.some((q) => q.in === "query" && q.name === "continue")
        )
        .map(([p]) => p);
      for (const want of ["/api/v1/images", "/api/v1/operations", "/api/v1/audit"]) {
        assert(lists.includes(want), `${want} documents continue: ${lists}`);
      }
      assert(lists.length >= 15, `only ${lists.length} lists: ${lists}`);
      for (const path of lists) {
        for (
          const [query, field] of [
            ["limit=0", "limit"],
            ["limit=abc", "limit"],
            ["limit=100000", "limit"],
            ["continue=garbage", "continue"],
          ]
        ) {
          const r = await call("GET", `${path}?${query}`, { token: tokens.admin });
          assertEquals(r.status, 400, `${path}?${query}: ${JSON.stringify(r.body)}`);
          assertEquals(fieldsOf(r), [field], `${path}?${query}`);
        }
        const one = await call("GET", `${path}?limit=1`, { token: tokens.admin });
        assertEquals(one.status, 200, `${path}?limit=1: ${JSON.stringify(one.body)}`);
        const arrays = Object.values(one.body).filter(Array.isArray) as unknown[][];
        assertEquals(arrays.length, 1, `${path}: one list in the answer`);
        assert(arrays[0].length <= 1, `${path}?limit=1 answered ${arrays[0].length} items`);
      }
    });
  } finally {
    await c.stop();
  }
});
