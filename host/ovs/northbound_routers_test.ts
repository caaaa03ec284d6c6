import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { testNetwork as network } from "./testing.ts";
import { OvnCentral } from "./ovn.ts";
import { applyNorthbound, desiredNorthbound } from "./northbound.ts";
import {
  applyRouters,
  desiredRouters,
  readRouters,
  type RouterInput,
  routerPortMac,
} from "./northbound_routers.ts";

const blue = network("blue", { subnet: "10.10.0.0/24", gateway: "10.10.0.1" });
const red = network("red", { subnet: "10.20.0.0/24", gateway: "10.20.0.1" });
const ext = network("ext", {
  type: "flat",
  subnet: "172.31.0.0/24",
  gateway: "172.31.0.1",
  physnet: "physnet1",
  mtu: 1500,
});

function input(over: Partial<RouterInput> = {}): RouterInput {
  return {
    name: "r1",
    snat: true,
    networks: [blue],
    uplink: { network: ext, ip: "172.31.0.2", chassis: ["h2", "h1"] },
    floatingIps: [{ external: "172.31.0.50", logical: "10.10.0.10" }],
    ...over,
  };
}

Deno.test("routers as OVN rows: ports at gateways, gateway chassis by priority, SNAT, FIPs", () => {
  const [r] = desiredRouters([input()]);
  assertEquals(r.name, "nvr-r1");
  assertEquals(r.ports.map((p) => [p.name, p.address, p.network, p.switchPort, p.chassis]), [
    ["nvr-r1_blue", "10.10.0.1/24", "blue", "nvrp-r1_blue", []],
    ["nvr-r1.uplink", "172.31.0.2/24", "ext", "nvrp-r1.uplink", ["h2", "h1"]],
  ]);
  assertEquals(r.nats, [
    { type: "snat", external: "172.31.0.2", logical: "10.10.0.0/24" },
    { type: "dnat_and_snat", external: "172.31.0.50", logical: "10.10.0.10" },
  ]);
  assertEquals(r.routes, [{ prefix: "0.0.0.0/0", nexthop: "172.31.0.1" }]);
  assert(/^02:6e:72(:[0-9a-f]{2}){3}$/.test(r.ports[0].mac), r.ports[0].mac);
  // Without SNAT the floating IPs stay; without an uplink there is no NAT and no route.
  assertEquals(desiredRouters([input({ snat: false })])[0].nats.map((n) => n.type), [
    "dnat_and_snat",
  ]);
  const inner = desiredRouters([input({ uplink: null })])[0];
  assertEquals([inner.ports.length, inner.nats, inner.routes], [1, [], []]);
});

testWithTimeout({
  name: "OVN northbound routers: applied, idempotent, changed one row at a time, drift repaired",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "novactl-nbr-" });
  const central = new OvnCentral(dataDir);
  const nbctl = (args: string[]) => central.nbctl(args);
  const switches = (nets = [blue, red, ext]) => applyNorthbound(nbctl, desiredNorthbound(nets, []));
  try {
    await central.ensureRunning();
    await switches();

    await t.step(
      "first pass: router, ports, switch ports, gateway chassis, NAT, route",
      async () => {
        const changes = await applyRouters(nbctl, desiredRouters([input()]));
        assert(changes.created.includes("nvr-r1"), JSON.stringify(changes));
        assertEquals(
          (await nbctl(["lrp-get-gateway-chassis", "nvr-r1.uplink"])).trim().split("\n")
            .map((l) => l.trim().split(/\s+/)),
          [["nvr-r1.uplink-h2", "2"], ["nvr-r1.uplink-h1", "1"]],
        );
        const nat = await nbctl(["lr-nat-list", "nvr-r1"]);
        assert(/snat\s+172\.31\.0\.2\s+10\.10\.0\.0\/24/.test(nat), nat);
        assert(/dnat_and_snat\s+172\.31\.0\.50\s+10\.10\.0\.10/.test(nat), nat);
        assert((await nbctl(["lr-route-list", "nvr-r1"])).includes("172.31.0.1"));
        assertEquals((await nbctl(["lsp-get-type", "nvrp-r1.uplink"])).trim(), "router");
        assertEquals(
          (await nbctl(["get", "Logical_Switch_Port", "nvrp-r1.uplink", "options:nat-addresses"]))
            .trim(),
          "router",
        );
        assertEquals(
          (await nbctl(["get", "Logical_Router_Port", "nvr-r1_blue", "mac"])).trim(),
          `"${routerPortMac("nvr-r1_blue")}"`,
        );
        const ls = await nbctl(["show", "nv-blue"]);
        assert(ls.includes("nvrp-r1_blue"), ls);
      },
    );

    await t.step("a second pass changes nothing", async () => {
      assertEquals(await applyRouters(nbctl, desiredRouters([input()])), {
        created: [],
        updated: [],
        deleted: [],
      });
    });

    await t.step(
      "a FIP moved, a network attached, priorities swapped: only those rows",
      async () => {
        const before = await readRouters(nbctl);
        const snatUuid = before.routers.get("nvr-r1")!.nats.find((n) => n.type === "snat")!.uuid;
        const changes = await applyRouters(
          nbctl,
          desiredRouters([input({
            networks: [blue, red],
            uplink: { network: ext, ip: "172.31.0.2", chassis: ["h1", "h2"] },
            floatingIps: [{ external: "172.31.0.50", logical: "10.10.0.11" }],
          })]),
        );
        assertEquals(changes.created.sort(), [
          "nat:nvr-r1:dnat_and_snat|172.31.0.50|10.10.0.11",
          "nat:nvr-r1:snat|172.31.0.2|10.20.0.0/24",
          "nvr-r1_red",
          "nvrp-r1_red",
        ]);
        assertEquals(changes.deleted, ["nat:nvr-r1:dnat_and_snat|172.31.0.50|10.10.0.10"]);
        const after = await readRouters(nbctl);
        assert(
          after.routers.get("nvr-r1")!.nats.some((n) => n.uuid === snatUuid),
          "the unchanged SNAT row was kept",
        );
        const gw = after.routers.get("nvr-r1")!.ports.get("nvr-r1.uplink")!.chassis;
        assertEquals([gw.get("h1")!.priority, gw.get("h2")!.priority], [2, 1]);
      },
    );

    await t.step(
      "drift repaired; others' routers left alone; a router gone is deleted",
      async () => {
        await nbctl(["lrp-del", "nvr-r1_red"]);
        await nbctl(["lr-nat-del", "nvr-r1", "snat", "10.10.0.0/24"]);
        await nbctl(["lr-add", "someone-elses"]);
        const want = desiredRouters([input({ networks: [blue, red] })]);
        const changes = await applyRouters(nbctl, want);
        assert(changes.created.includes("nvr-r1_red"), JSON.stringify(changes));
        assert(changes.created.includes("nat:nvr-r1:snat|172.31.0.2|10.10.0.0/24"));
        assertEquals((await applyRouters(nbctl, want)).created, []);
        const gone = await applyRouters(nbctl, []);
        assertEquals(gone.deleted.sort(), [
          "nvr-r1",
          "nvrp-r1.uplink",
          "nvrp-r1_blue",
          "nvrp-r1_red",
        ]);
        const left = (await nbctl(["lr-list"])).trim();
        assert(left.includes("someone-elses") && !left.includes("nvr-r1"), left);
        assertEquals((await readRouters(nbctl)).switchPorts.size, 0);
      },
    );
  } finally {
    await central.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
