/**
 * `/api/v1/routers`, `/api/v1/floating-ips` and node bridge mappings: the
 * replicated router state, uplink addresses from the uplink's IPAM, and every
 * refusal naming its field with nothing changed.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { type CallResult, fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "API: routers, floating IPs, bridge mappings", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.operator;
  const post = (path: string, body: unknown, as = token) => call("POST", path, { token: as, body });
  const ok = async (r: Promise<CallResult>, status = 200) => {
    const res = await r;
    assertEquals(res.status, status, JSON.stringify(res.body));
    return res.body;
  };
  /** Everything the refusals must leave as it was. */
  const snapshot = async () =>
    JSON.stringify([
      (await call("GET", "/api/v1/routers", { token })).body,
      (await call("GET", "/api/v1/floating-ips", { token })).body,
      (await call("GET", "/api/v1/networks", { token })).body,
    ]);
  const refused = async (r: Promise<CallResult>, status: number, field?: string) => {
    const res = await r;
    assertEquals(res.status, status, JSON.stringify(res.body));
    if (field) {
      const named = fieldsOf(res).includes(field) || res.body.error.message.startsWith(field) ||
        res.body.error.details?.field === field;
      assert(named, `${field} named: ${JSON.stringify(res.body)}`);
    }
  };
  try {
    await t.step("networks: an overlay, a flat uplink, a vlan; a VM on the overlay", async () => {
      await ok(
        post("/api/v1/networks", { name: "blue", type: "overlay", subnet: "10.30.0.0/24" }),
        201,
      );
      await ok(
        post("/api/v1/networks", { name: "red", type: "overlay", subnet: "10.31.0.0/24" }),
        201,
      );
      await ok(
        post("/api/v1/networks", {
          name: "ext",
          type: "flat",
          subnet: "172.31.0.0/24",
          gateway: "172.31.0.1",
        }),
        201,
      );
      const vlan = await ok(
        post("/api/v1/networks", {
          name: "v200",
          type: "vlan",
          vlan: 200,
          physnet: "physnet2",
          subnet: "172.32.0.0/24",
        }),
        201,
      );
      assertEquals([vlan.vlan, vlan.physnet], [200, "physnet2"]);
      await ok(
        post("/api/v1/vms", {
          name: "a",
          image: "img",
          start: false,
          memoryMiB: 64,
          nics: [{ network: "blue", ip: "10.30.0.10" }, { network: "red" }],
        }),
        201,
      );
    });

    await t.step("a router on the uplink takes its address from the uplink's IPAM", async () => {
      const r = await ok(post("/api/v1/routers", { name: "r1", uplink: "ext" }), 201);
      assertEquals([r.uplink, r.uplinkIp, r.snat, r.networks], ["ext", "172.31.0.2", true, []]);
      assertEquals(r.gatewayChassis, [], "no host maps physnet1 yet");
      await ok(post("/api/v1/routers/r1/networks", { network: "blue" }));
      const fip = await ok(post("/api/v1/floating-ips", { network: "ext" }), 201);
      assertEquals(fip.ip, "172.31.0.3");
      const attached = await ok(post("/api/v1/floating-ips/172.31.0.3/attach", { vm: "a" }));
      assertEquals([attached.vm, attached.nic], ["a", 0]);
      const shown = await ok(call("GET", "/api/v1/routers/r1", { token }));
      assertEquals(shown.networks, ["blue"]);
      assertEquals(shown.floatingIps.map((f: { ip: string }) => f.ip), ["172.31.0.3"]);
    });

    await t.step("bridge mappings make hosts gateway candidates, in priority order", async () => {
      const name = c.node.id;
      await refused(
        call("PUT", `/api/v1/nodes/${name}/bridge-mappings`, {
          token,
          body: { bridgeMappings: { physnet1: "br-ex" } },
        }),
        403,
      );
      // The test cluster's member registers no host record itself: as a joining host would.
      await c.node.propose({
        op: "node.upsert",
        name,
        url: "http://127.0.0.1:1",
        inventory: null as never,
        labels: {},
        at: Date.now(),
      });
      const put = (bridgeMappings: unknown) =>
        call("PUT", `/api/v1/nodes/${name}/bridge-mappings`, {
          token: tokens.admin,
          body: { bridgeMappings },
        });
      await refused(put({ physnet1: "br-int" }), 400, "bridgeMappings");
      await refused(put({ physnet1: "a-bridge-name-too-long" }), 400, "bridgeMappings");
      await refused(put({ "bad physnet": "br-ex" }), 400, "bridgeMappings");
      await refused(put({ physnet1: "br-ex", physnet2: "br-ex" }), 400, "bridgeMappings");
      await refused(
        call("PUT", "/api/v1/nodes/nosuch/bridge-mappings", {
          token: tokens.admin,
          body: { bridgeMappings: {} },
        }),
        404,
      );
      await ok(put({ physnet1: "br-ex" }));
      const node = await ok(call("GET", `/api/v1/nodes/${name}`, { token }));
      assertEquals(node.bridgeMappings, { physnet1: "br-ex" });
      const r = await ok(call("GET", "/api/v1/routers/r1", { token }));
      assertEquals(r.gatewayChassis, [{ node: name, priority: 1 }]);
    });

    await t.step("bad input is refused with the field named, and nothing changes", async () => {
      const before = await snapshot();
      await refused(post("/api/v1/routers", { name: "R_1" }), 400, "name");
      await refused(post("/api/v1/routers", { name: "r1" }), 409, "name");
      await refused(post("/api/v1/routers", { name: "r2", uplink: "blue" }), 400, "uplink");
      await refused(post("/api/v1/routers", { name: "r2", uplink: "nosuch" }), 400, "uplink");
      await refused(
        post("/api/v1/routers", { name: "r2", uplink: "ext", uplinkIp: "10.0.0.1" }),
        400,
        "uplinkIp",
      );
      await refused(
        post("/api/v1/routers", { name: "r2", uplink: "ext", uplinkIp: "172.31.0.3" }),
        409,
        "uplinkIp",
      );
      await refused(
        post("/api/v1/routers", { name: "r2", uplinkIp: "172.31.0.9" }),
        400,
        "uplinkIp",
      );
      await refused(post("/api/v1/routers/r1/networks", { network: "nosuch" }), 400, "network");
      await refused(post("/api/v1/routers/r1/networks", { network: "blue" }), 409, "network");
      await refused(post("/api/v1/routers/r1/networks", { network: "ext" }), 409, "network");
      await refused(post("/api/v1/routers/nosuch/networks", { network: "red" }), 404);
      await refused(call("DELETE", "/api/v1/routers/r1", { token }), 409);
      await refused(call("DELETE", "/api/v1/routers/r1/networks/blue", { token }), 409);
      await refused(call("DELETE", "/api/v1/routers/r1/networks/red", { token }), 404);
      await refused(
        call("PUT", "/api/v1/routers/r1/uplink", { token, body: { uplink: null } }),
        409,
      );
      await refused(post("/api/v1/floating-ips", { network: "blue" }), 400, "network");
      await refused(post("/api/v1/floating-ips", { network: "nosuch" }), 400, "network");
      await refused(post("/api/v1/floating-ips", { network: "ext", ip: "10.1.1.1" }), 400, "ip");
      await refused(post("/api/v1/floating-ips", { network: "ext", ip: "172.31.0.1" }), 400, "ip");
      await refused(post("/api/v1/floating-ips", { network: "ext", ip: "172.31.0.2" }), 409, "ip");
      await refused(post("/api/v1/floating-ips", { network: "ext", ip: "nope" }), 400, "ip");
      await refused(post("/api/v1/floating-ips/172.31.0.99/attach", { vm: "a" }), 404);
      await refused(post("/api/v1/floating-ips/172.31.0.3/attach", { vm: "nosuch" }), 404);
      await refused(
        post("/api/v1/floating-ips/172.31.0.3/attach", { vm: "a", nic: -1 }),
        400,
        "nic",
      );
      // NIC 1 of a is on red, which no router connects to ext.
      await refused(
        post("/api/v1/floating-ips/172.31.0.3/attach", { vm: "a", nic: 1 }),
        409,
        "vm",
      );
      await refused(post("/api/v1/floating-ips/172.31.0.3/attach", { vm: "a", nic: 5 }), 400, "vm");
      await refused(call("DELETE", "/api/v1/networks/ext", { token }), 409);
      await refused(call("DELETE", "/api/v1/networks/blue", { token }), 409);
      await refused(
        post("/api/v1/networks", {
          name: "v5000",
          type: "vlan",
          vlan: 5000,
          subnet: "172.40.0.0/24",
        }),
        400,
        "vlan",
      );
      await refused(
        post("/api/v1/networks", { name: "v0", type: "vlan", vlan: 0, subnet: "172.40.0.0/24" }),
        400,
        "vlan",
      );
      // A VM cannot take an address a router or a floating IP holds on the uplink.
      await refused(
        post("/api/v1/vms", {
          name: "b",
          image: "img",
          start: false,
          memoryMiB: 64,
          nics: [{ network: "ext", ip: "172.31.0.2" }],
        }),
        409,
      );
      const viewer = post("/api/v1/routers", { name: "r3" }, tokens.viewer);
      await refused(viewer, 403);
      assertEquals(await snapshot(), before);
    });

    await t.step("--nat attaches a new network to the one router with an uplink", async () => {
      const green = await ok(
        post("/api/v1/networks", {
          name: "green",
          type: "overlay",
          subnet: "10.33.0.0/24",
          nat: true,
        }),
        201,
      );
      assertEquals(green.nat, true);
      assertEquals((await ok(call("GET", "/api/v1/routers/r1", { token }))).networks, [
        "blue",
        "green",
      ]);
      await ok(post("/api/v1/routers", { name: "r2", uplink: "ext" }), 201);
      await refused(
        post("/api/v1/networks", {
          name: "pink",
          type: "overlay",
          subnet: "10.34.0.0/24",
          nat: true,
        }),
        400,
        "nat",
      );
      assertEquals((await call("GET", "/api/v1/networks/pink", { token })).status, 404);
    });

    await t.step(
      "detach, uplink move, deletes: addresses return to the uplink's IPAM",
      async () => {
        await ok(post("/api/v1/floating-ips/172.31.0.3/detach", {}));
        await ok(call("DELETE", "/api/v1/routers/r1/networks/blue", { token }));
        const moved = await ok(
          call("PUT", "/api/v1/routers/r2/uplink", { token, body: { uplink: "v200" } }),
        );
        assertEquals([moved.uplink, moved.uplinkIp], ["v200", "172.32.0.2"]);
        await ok(call("DELETE", "/api/v1/floating-ips/172.31.0.3", { token }));
        // r2's old uplink address (.4) and the floating IP's (.3) are free again.
        const again = await ok(post("/api/v1/floating-ips", { network: "ext" }), 201);
        assertEquals(again.ip, "172.31.0.3");
        await ok(call("DELETE", "/api/v1/routers/r2", { token }));
        const list = await ok(call("GET", "/api/v1/routers", { token }));
        assertEquals(list.routers.map((r: { name: string }) => r.name), ["r1"]);
      },
    );
  } finally {
    await c.stop();
  }
});
