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
      const whole = await list("?limit=25");
      assertEquals([whole.vms.length, whole.continue], [25, undefined], "a full last page ends");
      const cut = await list("?limit=24");
      assertEquals(cut.vms.length, 24);
      const last = await list(`?limit=24&continue=${encodeURIComponent(cut.continue!)}`);
      assertEquals([names(last), last.continue], [["vm24"], undefined]);
      const webPage = await list("?label=tier%3Dweb&limit=4");
      assertEquals(webPage.vms.length, 4, "labels filtered before the page is cut");
    });

    await t.step(
      "each listed VM is its record, as GET /vms/NAME shows it to that role",
      async () => {
        // What the list writes from SQLite's JSON must be what the records give: nulls, a
        // failure reason, guest details, odd label keys, text beyond ASCII, and secrets
        // redacted for all but admins.
        await c.vm(
          {
            name: "zz-odd",
            node: "n2",
            labels: { "app.kubernetes.io/name": 'wéb "quoted"' },
            description: "naïve \u2028 line",
            cloudInit: { user: "ops", passwordHash: "$6$salt$hash", userData: "#cloud-config\n" },
          } as Parameters<typeof c.vm>[0],
          "failed",
          'QEMU exited: "boom"',
        );
        await c.node.propose({
          op: "vm.observed",
          name: "vm03",
          node: "n2",
          state: "running",
          guest: {
            agent: "ok",
            os: { id: "debian" },
            interfaces: [{ name: "eth0", addresses: [] }],
          },
          at: Date.now(),
        });
        for (const role of ["viewer", "admin"] as const) {
          const r = await call("GET", "/api/v1/vms", { token: tokens[role] });
          const listed = (r.body as { vms: { name: string }[] }).vms;
          assertEquals(listed.length, 26);
          for (const vm of listed) {
            const one = await call("GET", `/api/v1/vms/${vm.name}`, { token: tokens[role] });
            assertEquals(vm, one.body, `${vm.name} as ${role}`);
          }
          const odd = listed.find((v) => v.name === "zz-odd") as unknown as {
            cloudInit: { passwordHash: string; userData: string };
          };
          assertEquals(odd.cloudInit.passwordHash === "$6$salt$hash", role === "admin", role);
        }
      },
    );

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

testWithTimeout({
  name: "API: a full list of 700 VMs, filtered by a label or not, is complete and in order",
  ...opts,
}, async () => {
  const { c, call, tokens } = await startTestApp();
  try {
    // The label `keep` is on VMs 0–99 and 600–699 only.
    for (let i = 0; i < 700; i++) {
      const keep = i < 100 || i >= 600 ? "yes" : "no";
      await c.vm(
        { name: `v${String(i).padStart(3, "0")}`, node: "n1", labels: { keep } },
        "stopped",
      );
    }
    const all = await call("GET", "/api/v1/vms", { token: tokens.viewer });
    assertEquals(all.status, 200);
    const vms = (all.body as { vms: { name: string }[] }).vms;
    assertEquals(vms.length, 700);
    assertEquals(vms.map((v) => v.name), [...vms.map((v) => v.name)].sort());
    const kept = await call("GET", "/api/v1/vms?label=keep%3Dyes", { token: tokens.viewer });
    const keptNames = (kept.body as { vms: { name: string }[] }).vms.map((v) => v.name);
    assertEquals(keptNames.length, 200);
    assertEquals(keptNames[99], "v099");
    assertEquals(keptNames[100], "v600");
    const none = await call("GET", "/api/v1/vms?label=keep%3Dmaybe", { token: tokens.viewer });
    assertEquals(none.body, { vms: [] });
  } finally {
    await c.stop();
  }
});
