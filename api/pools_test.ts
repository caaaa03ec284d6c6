/**
 * Pools, volumes and VM disks through the real API on a one-voter cluster whose host side is
 * not there: every refusal below comes before any host work (a use of the host would answer
 * 500), names the field, and leaves nothing written.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const GiB = 2 ** 30;

testWithTimeout({
  name: "API: bad pools, volumes and disk changes are refused with the field named",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { c, call, tokens } = await startTestApp();
  const as = { token: tokens.operator };
  try {
    const cases: [unknown, number, string[]][] = [
      [{ name: "p", driver: "zfs", source: "/srv/p" }, 400, ["driver"]],
      [{ name: "P!", driver: "dir", source: "/srv/p" }, 400, ["name"]],
      [{ name: "p", driver: "btrfs", source: "relative" }, 400, ["source"]],
      [{ name: "dir", driver: "dir", source: "/srv/p" }, 400, ["name"]],
      [{ name: "p", driver: "btrfs", source: "/srv/p.img", sizeBytes: GiB }, 400, ["node"]],
      [{ name: "p", driver: "shared-dir", source: "/srv/p", node: "n1" }, 400, ["node"]],
    ];
    for (const [body, status, fields] of cases) {
      const r = await call("POST", "/api/v1/pools", { ...as, body });
      assertEquals([r.status, fieldsOf(r)], [status, fields], JSON.stringify([body, r.body]));
    }
    const ghost = await call("POST", "/api/v1/pools", {
      ...as,
      body: { name: "p", driver: "btrfs", source: "/srv/p", node: "n9" },
    });
    assertEquals(ghost.status, 404);
    assertEquals(
      (await call("GET", "/api/v1/pools", as)).body.pools.map((p: { name: string }) => p.name),
      ["dir"],
    );

    const vols: [unknown, number, string[] | RegExp][] = [
      [{ name: "v", pool: "nope", sizeBytes: GiB }, 400, ["pool"]],
      [{ name: "v", pool: "dir", sizeBytes: GiB }, 400, ["node"]],
      [{ name: "v", pool: "dir", sizeBytes: 1000 }, 400, ["sizeBytes"]],
      [{ name: "V_1", pool: "dir", sizeBytes: GiB, node: "n1" }, 400, ["name"]],
      [{ name: "v", pool: "dir", sizeBytes: GiB, node: "n1", fromImage: "img" }, 400, [
        "fromImage",
      ]],
      [{ name: "v", pool: "dir", sizeBytes: 60 * 2 ** 40, node: "n1" }, 409, /^size: /],
    ];
    for (const [body, status, expected] of vols) {
      const r = await call("POST", "/api/v1/volumes", { ...as, body });
      assertEquals(r.status, status, JSON.stringify([body, r.body]));
      if (expected instanceof RegExp) {
        assert(expected.test(r.body.error.message), r.body.error.message);
      } else assertEquals(fieldsOf(r), expected, JSON.stringify(r.body));
    }
    assertEquals((await call("GET", "/api/v1/volumes", as)).body.volumes, []);

    const rootDisk = { id: "root", volume: "run1-root", sizeBytes: GiB, source: { kind: "blank" } };
    await c.vm({ name: "run1", node: "n1", disks: [rootDisk as never] }, "running");
    const attach = await call("POST", "/api/v1/vms/run1/disks", {
      ...as,
      body: { volume: "nope" },
    });
    assertEquals([attach.status, fieldsOf(attach)], [400, ["volume"]]);
    const root = await call("DELETE", "/api/v1/vms/run1/disks/root", as);
    assertEquals(root.status, 409, JSON.stringify(root.body));
    assert(/root disk of running VM "run1"/.test(root.body.error.message), root.body.error.message);
    const viewer = await call("POST", "/api/v1/vms/run1/disks", {
      token: tokens.viewer,
      body: { volume: "v" },
    });
    assertEquals(viewer.status, 403);
    assertEquals(c.node.fsm.vm("run1")!.disks.map((d) => d.id), ["root"], "nothing changed");
  } finally {
    await c.stop();
  }
});
