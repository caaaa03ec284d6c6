/** `GET /api/v1/vms`: filters by node, state and labels, and pages with a continue token. */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "API: vm list filters and pages", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  try {
    await c.addHost("n2");
    for (let i = 0; i < 25; i++) {
      await c.vm(
        {
          name: `vm${String(i).padStart(2, "0")}`,
          node: i % 2 ? "n2" : "n1",
          labels: { tier: i % 3 ? "web" : "db", env: "prod" },
        },
        i % 5 ? "running" : "stopped",
      );
    }
    const list = async (query: string) => {
      const r = await call("GET", `/api/v1/vms${query}`, { token: tokens.viewer });
      assertEquals(r.status, 200, JSON.stringify(r.body));
      return r.body as { vms: { name: string; node: string; state: string }[]; continue?: string };
    };
    const names = (b: { vms: { name: string }[] }) => b.vms.map((v) => v.name);

    await t.step("no query: every VM, in name order, no continue token", async () => {
      const all = await list("");
      assertEquals(all.vms.length, 25);
      assertEquals(names(all), [...names(all)].sort());
      assertEquals(all.continue, undefined);
    });

    await t.step("node, state and labels filter together", async () => {
      const onN2 = await list("?node=n2");
      assert(onN2.vms.length === 12 && onN2.vms.every((v) => v.node === "n2"));
      const stopped = await list("?state=stopped");
      assertEquals(names(stopped), ["vm00", "vm05", "vm10", "vm15", "vm20"]);
      const db = await list("?label=tier%3Ddb&label=env%3Dprod&node=n1");
      assertEquals(names(db), ["vm00", "vm06", "vm12", "vm18", "vm24"]);
      assertEquals(names(await list("?label=tier%3Dnone")), []);
    });

    await t.step("pages of 10 walk every VM once with the continue token", async () => {
      const seen: string[] = [];
      let token: string | undefined;
      for (let page = 0; page < 5; page++) {
        const b = await list(`?limit=10${token ? `&continue=${encodeURIComponent(token)}` : ""}`);
        seen.push(...names(b));
        token = b.continue;
        if (!token) break;
      }
      assertEquals(seen, names(await list("")));
      const webPage = await list("?label=tier%3Dweb&limit=4");
      assertEquals(webPage.vms.length, 4, "labels filtered before the page is cut");
    });

    await t.step("bad filters are 400s naming the field", async () => {
      for (
        const [query, field] of [
          ["?state=sleeping", "state"],
          ["?limit=0", "limit"],
          ["?limit=5000", "limit"],
          ["?label=novalue", "label"],
          ["?continue=garbage", "continue"],
        ]
      ) {
        const r = await call("GET", `/api/v1/vms${query}`, { token: tokens.viewer });
        assertEquals(r.status, 400, query);
        assertEquals(fieldsOf(r), [field], query);
      }
    });
  } finally {
    await c.stop();
  }
});
