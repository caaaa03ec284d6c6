/**
 * List commands fetch every page of a list (following `continue`) through one helper,
 * ApiClient.list; `--limit N` stops at N items. Against a stand-in server paging two at a time.
 */
import { assertEquals, assertRejects } from "../core/testing/assert.ts";
import { NovaError } from "../core/errors/mod.ts";
import { ApiClient } from "./client.ts";
import { cli, standIn, withEnv } from "./testing.ts";

const named = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({ name: `${prefix}${i}`, id: `${prefix}${i}` }));

const LISTS = {
  "/api/v1/images": { key: "images", items: named("img", 5) },
  "/api/v1/operations": { key: "operations", items: named("op", 4) },
  "/api/v1/audit": {
    key: "entries",
    items: named("e", 5).map((e, i) => ({ ...e, at: 1000 - i, principal: "p", method: "GET" })),
  },
  "/api/v1/floating-ips": { key: "floatingIps", items: named("f", 3) },
};

async function withLists(fn: (url: string, s: ReturnType<typeof standIn>) => Promise<void>) {
  const s = standIn("x", [], LISTS);
  const dir = await Deno.makeTempDir();
  try {
    await withEnv(
      { XDG_CONFIG_HOME: dir, NOVACTL_SERVER: undefined, NOVACTL_CONTEXT: undefined },
      () => fn(s.url, s),
    );
  } finally {
    await s.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("list commands fetch every page; --limit stops at that many", async () => {
  await withLists(async (url, s) => {
    for (
      const [args, path, want] of [
        [["image", "list"], "/api/v1/images", 5],
        [["operation", "list"], "/api/v1/operations", 4],
        [["audit", "list"], "/api/v1/audit", 5],
        [["fip", "list"], "/api/v1/floating-ips", 3],
      ] as const
    ) {
      const before = s.seen.length;
      const r = await cli(...args, "--server", url, "-o", "json");
      assertEquals(r.code, 0, r.stderr);
      const key = LISTS[path].key;
      const body = JSON.parse(r.stdout);
      assertEquals(Object.keys(body), [key], "one envelope, without continue");
      assertEquals(body[key].length, want, args.join(" "));
      const asked = s.seen.slice(before).filter((q) => q.path === path);
      assertEquals(asked.length, Math.ceil(want / 2), `${args.join(" ")}: one request a page`);
      assertEquals(
        asked.slice(1).map((q) => q.query.get("continue")),
        asked.slice(1).map((_, i) => String(2 * (i + 1))),
      );
    }
    const r = await cli("image", "list", "-q", "--server", url, "--limit", "3");
    assertEquals(r.stdout, "img0\nimg1\nimg2\n");
    assertEquals(
      s.seen.at(-1)!.query.get("limit"),
      "1",
      "the last page asks only for what is missing",
    );
  });
});

Deno.test("ApiClient.list: filters kept on every page; an answer without the list is an error", async () => {
  await withLists(async (url, s) => {
    const client = new ApiClient({ server: url });
    const r = await client.list("/api/v1/images?label=a%3Db", "images");
    assertEquals(r.images.length, 5);
    const asked = s.seen.filter((q) => q.path === "/api/v1/images");
    assertEquals(asked.map((q) => q.query.get("label")), ["a=b", "a=b", "a=b"]);
    const e = await assertRejects(() => client.list("/api/v1/images", "nope"), NovaError);
    assertEquals(e.message.includes('"nope"'), true, e.message);
  });
});

Deno.test("ApiClient.list: --limit holds against a server that ignores ?limit (older releases)", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => Response.json({ images: named("img", 5) }),
  );
  try {
    const client = new ApiClient({ server: `http://127.0.0.1:${server.addr.port}` });
    assertEquals((await client.list("/api/v1/images", "images", 2)).images.length, 2);
    assertEquals((await client.list("/api/v1/images", "images")).images.length, 5);
  } finally {
    await server.shutdown();
  }
});
