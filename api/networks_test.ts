/** `/api/v1/networks` and NICs on VM create: the replicated network state and its IPAM. */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";
import { NOVACTL_OUI } from "../core/network/mod.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "API: networks, NIC addresses and MACs", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.operator;
  const listNetworks = async () =>
    (await call("GET", "/api/v1/networks", { token: tokens.viewer })).body.networks as {
      name: string;
      ports: number;
    }[];
  const createVm = (name: string, nics: unknown) =>
    call("POST", "/api/v1/vms", {
      token,
      body: { name, image: "img", start: false, memoryMiB: 64, nics },
    });
  type Nic = { network: string; ip: string | null; mac: string };
  const nicsOf = async (name: string): Promise<Nic[]> =>
    (await call("GET", `/api/v1/vms/${name}`, { token })).body.nics;
  try {
    assert(c.node.fsm.image("img"), "the test app's image");

    await t.step(
      "an overlay network gets its defaults: first host as gateway, MTU 1442",
      async () => {
        const r = await call("POST", "/api/v1/networks", {
          token,
          body: { name: "blue", type: "overlay", subnet: "10.10.0.0/24" },
        });
        assertEquals(r.status, 201, JSON.stringify(r.body));
        const shown = (await call("GET", "/api/v1/networks/blue", { token })).body;
        assertEquals(
          [shown.subnet, shown.gateway, shown.mtu, shown.dhcp, shown.vlan, shown.physnet],
          ["10.10.0.0/24", "10.10.0.1", 1442, true, null, null],
        );
        const vlan = await call("POST", "/api/v1/networks", {
          token,
          body: { name: "v100", type: "vlan", vlan: 100, subnet: "192.168.100.0/24" },
        });
        assertEquals(vlan.status, 201, JSON.stringify(vlan.body));
        assertEquals([vlan.body.physnet, vlan.body.mtu], ["physnet1", 1500]);
      },
    );

    await t.step("bad input is refused with the field named, and nothing changes", async () => {
      const before = await listNetworks();
      const refused = async (body: Record<string, unknown>, status: number, field: string) => {
        const r = await call("POST", "/api/v1/networks", { token, body });
        assertEquals(r.status, status, `${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
        const named = fieldsOf(r).includes(field) || r.body.error.message.startsWith(field) ||
          r.body.error.details?.field === field;
        assert(named, `${field} named: ${JSON.stringify(r.body)}`);
      };
      await refused({ name: "o1", type: "overlay", subnet: "10.10.0.128/25" }, 409, "subnet");
      await refused({ name: "o2", type: "overlay", subnet: "10.0.0.0/8" }, 409, "subnet");
      await refused({ name: "o3", type: "overlay", subnet: "10.20.0.5/24" }, 400, "subnet");
      await refused(
        { name: "o4", type: "overlay", subnet: "10.20.0.0/24", gateway: "10.21.0.1" },
        400,
        "gateway",
      );
      await refused({ name: "o5", type: "vlan", vlan: 4095, subnet: "10.30.0.0/24" }, 400, "vlan");
      await refused({ name: "o6", type: "vlan", subnet: "10.30.0.0/24" }, 400, "vlan");
      await refused({ name: "o7", type: "overlay", vlan: 7, subnet: "10.30.0.0/24" }, 400, "vlan");
      await refused({ name: "o8", type: "vlan", vlan: 100, subnet: "10.31.0.0/24" }, 409, "vlan");
      await refused({ name: "o9", type: "overlay", subnet: "10.32.0.0/24", mtu: 100 }, 400, "mtu");
      const dup = await call("POST", "/api/v1/networks", {
        token,
        body: { name: "blue", type: "overlay", subnet: "10.99.0.0/24" },
      });
      assertEquals(dup.status, 409);
      assertEquals(await listNetworks(), before);
    });

    await t.step("NICs get the lowest free address and a MAC of novactl's OUI", async () => {
      assertEquals((await createVm("a", [{ network: "blue" }])).status, 201);
      assertEquals((await createVm("b", [{ network: "blue", ip: "10.10.0.50" }])).status, 201);
      assertEquals((await createVm("c", [{ network: "blue" }, { network: "v100" }])).status, 201);
      const [a, b, c2] = [await nicsOf("a"), await nicsOf("b"), await nicsOf("c")];
      assertEquals(a.map((n) => n.ip), ["10.10.0.2"]);
      assertEquals(b.map((n) => n.ip), ["10.10.0.50"]);
      assertEquals(c2.map((n) => [n.network, n.ip]), [["blue", "10.10.0.3"], [
        "v100",
        "192.168.100.2",
      ]]);
      const macs = [...a, ...b, ...c2].map((n) => n.mac);
      assertEquals(new Set(macs).size, 4, `distinct: ${macs}`);
      assert(macs.every((m) => m.startsWith(NOVACTL_OUI)), macs.join(" "));
    });

    await t.step(
      "a taken, outside or unknown NIC setting refuses the VM, naming the NIC",
      async () => {
        const before = (await call("GET", "/api/v1/vms", { token })).body.vms.length;
        const taken = await createVm("d", [{ network: "blue", ip: "10.10.0.50" }]);
        assertEquals(taken.status, 409, JSON.stringify(taken.body));
        assert(
          /nics\[0\]\.ip: .*10\.10\.0\.50/.test(taken.body.error.message),
          taken.body.error.message,
        );
        const outside = await createVm("d", [{ network: "blue", ip: "10.11.0.9" }]);
        assertEquals([outside.status, fieldsOf(outside)], [400, ["nics[0].ip"]]);
        const gateway = await createVm("d", [{ network: "blue", ip: "10.10.0.1" }]);
        assertEquals([gateway.status, fieldsOf(gateway)], [400, ["nics[0].ip"]]);
        const unknown = await createVm("d", [{ network: "blue" }, { network: "red" }]);
        assertEquals([unknown.status, fieldsOf(unknown)], [400, ["nics[1].network"]]);
        const mac = await createVm("d", [{ network: "blue", mac: "01:00:5e:00:00:01" }]);
        assertEquals([mac.status, fieldsOf(mac)], [400, ["nics[0].mac"]]);
        assertEquals((await call("GET", "/api/v1/vms", { token })).body.vms.length, before);
        const blue = (await call("GET", "/api/v1/networks/blue", { token })).body;
        assertEquals(blue.ports.map((p: { vm: string }) => p.vm), ["a", "b", "c"]);
      },
    );

    await t.step(
      "concurrent creates on a small network: each address once, the rest refused",
      async () => {
        const r = await call("POST", "/api/v1/networks", {
          token,
          body: { name: "tiny", type: "overlay", subnet: "10.40.0.0/28" },
        });
        assertEquals(r.status, 201);
        // A /28 has 14 host addresses; the gateway takes one: 13 NICs fit.
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => createVm(`t${i}`, [{ network: "tiny" }])),
        );
        const ok = results.filter((x) => x.status === 201);
        const full = results.filter((x) => x.status === 409);
        assertEquals([ok.length, full.length], [13, 7]);
        assert(
          full.every((x) => /no free address/.test(x.body.error.message)),
          full[0]?.body.error.message,
        );
        const ports = (await call("GET", "/api/v1/networks/tiny", { token })).body.ports as {
          ip: string;
        }[];
        const ips = ports.map((p) => p.ip);
        assertEquals(new Set(ips).size, 13, `no duplicate: ${ips}`);
        assert(!ips.includes("10.40.0.1"), "never the gateway");
      },
    );

    await t.step(
      "a network with NICs cannot be deleted; once its VMs are gone it can",
      async () => {
        const busy = await call("DELETE", "/api/v1/networks/blue", { token });
        assertEquals(busy.status, 409);
        assert(/a, b, c/.test(busy.body.error.message), busy.body.error.message);
        for (const name of ["a", "b", "c"]) {
          const r = await call("DELETE", `/api/v1/vms/${name}?force=true`, { token });
          assert(r.status < 300, JSON.stringify(r.body));
          // The test app runs no host: report, as the VM's host would, that it is gone.
          const node = c.node.fsm.vm(name)!.node!;
          await c.node.propose({ op: "vm.remove", name, node, at: Date.now() });
        }
        assertEquals(c.node.fsm.networkPorts("blue"), [], "the VMs' NICs released");
        assertEquals((await call("DELETE", "/api/v1/networks/blue", { token })).status, 200);
        assertEquals((await call("GET", "/api/v1/networks/blue", { token })).status, 404);
      },
    );

    await t.step("a viewer reads networks but cannot make one", async () => {
      const r = await call("POST", "/api/v1/networks", {
        token: tokens.viewer,
        body: { name: "x", type: "overlay", subnet: "10.50.0.0/24" },
      });
      assertEquals(r.status, 403);
      assertEquals((await call("GET", "/api/v1/networks", { token: tokens.viewer })).status, 200);
    });
  } finally {
    await c.stop();
  }
});
