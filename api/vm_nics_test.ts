/** `/api/v1/vms/:name/nics`: NIC hot-plug in the replicated state (the host side is tested in tests/). */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

type Nic = { network: string; ip: string | null; mac: string; index: number };

testWithTimeout({ name: "API: NIC add and remove", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.operator;
  const nicsOf = async (vm: string): Promise<Nic[]> =>
    (await call("GET", `/api/v1/vms/${vm}/nics`, { token: tokens.viewer })).body.nics;
  const add = (vm: string, body: unknown, as = token) =>
    call("POST", `/api/v1/vms/${vm}/nics`, { token: as, body });
  const remove = (vm: string, nic: string) =>
    call("DELETE", `/api/v1/vms/${vm}/nics/${encodeURIComponent(nic)}`, { token });
  /** Everything a refusal must leave as it was: the VM's NICs and the network's ports. */
  const snapshot = async () =>
    JSON.stringify([
      await nicsOf("a"),
      (await call("GET", "/api/v1/networks/blue", { token })).body.ports,
    ]);
  try {
    for (const [name, subnet] of [["blue", "10.60.0.0/24"], ["red", "10.61.0.0/24"]]) {
      const r = await call("POST", "/api/v1/networks", {
        token,
        body: { name, type: "overlay", subnet },
      });
      assertEquals(r.status, 201, JSON.stringify(r.body));
    }
    assertEquals(
      (await call("POST", "/api/v1/security-groups", { token, body: { name: "web" } })).status,
      201,
    );
    const created = await call("POST", "/api/v1/vms", {
      token,
      body: { name: "a", image: "img", start: false, memoryMiB: 64, nics: [{ network: "blue" }] },
    });
    assertEquals(created.status, 201, JSON.stringify(created.body));

    await t.step(
      "a NIC added to a stopped VM gets an address, a MAC and the next index",
      async () => {
        const r = await add("a", { network: "red", ip: "10.61.0.7", securityGroups: ["web"] });
        assertEquals(r.status, 201, JSON.stringify(r.body));
        assertEquals([r.body.network, r.body.ip, r.body.index], ["red", "10.61.0.7", 1]);
        const third = await add("a", { network: "blue" });
        assertEquals([third.body.ip, third.body.index], ["10.60.0.3", 2]);
        assertEquals((await nicsOf("a")).map((n) => n.index), [0, 1, 2]);
        const members = c.node.fsm.securityGroups.members("web");
        assertEquals(members, [{ vm: "a", nic: 1, group: "web" }]);
        const vm = (await call("GET", "/api/v1/vms/a", { token })).body;
        assertEquals(vm.nics.length, 3, "vm show lists it");
      },
    );

    await t.step(
      "remove by index or MAC: the others keep their index, port and address",
      async () => {
        const [, red, third] = await nicsOf("a");
        const r = await remove("a", "1");
        assertEquals(r.status, 200, JSON.stringify(r.body));
        assertEquals(r.body.removed.mac, red.mac);
        assertEquals(c.node.fsm.securityGroups.members("web"), [], "out of its groups");
        assertEquals(c.node.fsm.networkPorts("red"), [], "its address freed");
        assertEquals((await nicsOf("a")).map((n) => [n.index, n.ip]), [[0, "10.60.0.2"], [
          2,
          "10.60.0.3",
        ]]);
        // The freed index is the lowest: the next NIC takes it.
        const again = await add("a", { network: "red" });
        assertEquals([again.body.index, again.body.ip], [1, "10.61.0.2"]);
        const byMac = await remove("a", third.mac.toUpperCase());
        assertEquals([byMac.status, byMac.body.removed.index], [200, 2]);
        const ports = c.node.fsm.networkPorts("blue").map((p) => [p.vm, p.nic, p.ip]);
        assertEquals(ports, [["a", 0, "10.60.0.2"]]);
      },
    );

    await t.step("bad input: refused with the field named, and nothing changes", async () => {
      const before = await snapshot();
      const refused = (r: Awaited<ReturnType<typeof add>>, status: number, field: string) => {
        assertEquals(r.status, status, JSON.stringify(r.body));
        const named = fieldsOf(r).includes(field) || r.body.error.details?.field === field ||
          r.body.error.message.startsWith(`${field}:`);
        assert(named, `${field} named: ${JSON.stringify(r.body)}`);
      };
      refused(await add("a", { network: "green" }), 400, "nic.network");
      refused(await add("a", { network: "blue", ip: "10.60.0.2" }), 409, "nic.ip");
      refused(await add("a", { network: "blue", ip: "10.99.0.2" }), 400, "nic.ip");
      refused(await add("a", { network: "blue", mac: "zz" }), 400, "nic.mac");
      refused(
        await add("a", { network: "blue", securityGroups: ["db"] }),
        400,
        "nic.securityGroups",
      );
      const unknownKey = await add("a", { network: "blue", colour: "x" });
      assertEquals(unknownKey.status, 400);
      assert(/colour/.test(unknownKey.body.error.message), unknownKey.body.error.message);
      refused(await remove("a", "5"), 404, "nic");
      refused(await remove("a", "02:00:00:00:00:99"), 404, "nic");
      refused(await remove("a", "first"), 400, "nic");
      assertEquals((await add("nope", { network: "blue" })).status, 404);
      assertEquals((await add("a", { network: "blue" }, tokens.viewer)).status, 403);
      assertEquals(await snapshot(), before);
    });

    await t.step("at most 8 NICs", async () => {
      for (let i = (await nicsOf("a")).length; i < 8; i++) {
        assertEquals((await add("a", { network: "blue" })).status, 201);
      }
      const ninth = await add("a", { network: "blue" });
      assertEquals([ninth.status, fieldsOf(ninth)], [400, ["nic"]]);
    });

    await t.step("a VM that may run with user-mode networking keeps its devices", async () => {
      const r = await call("POST", "/api/v1/vms", {
        token,
        body: { name: "slirp", image: "img", start: true, memoryMiB: 64 },
      });
      assertEquals(r.status, 202, JSON.stringify(r.body)); // created, and its start an operation
      const refused = await add("slirp", { network: "blue" });
      assertEquals(refused.status, 409, JSON.stringify(refused.body));
      assert(/user-mode/.test(refused.body.error.message), refused.body.error.message);
    });
  } finally {
    await c.stop();
  }
});
