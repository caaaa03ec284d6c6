/**
 * A real guest on a real OVN network, on one host: the northbound state
 * derived from a network and a NIC (host/ovs/northbound.ts), the NIC's tap on
 * the integration bridge (host/ovs/nic.ts), QEMU with that tap, and the guest
 * getting the address IPAM chose from OVN's own DHCP.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";
import { GuestAgent, QemuDriver, qemuUser } from "../host/kvm/mod.ts";
import {
  applyNorthbound,
  desiredNorthbound,
  plugTap,
  portName,
  tapName,
  unplugTap,
} from "../host/ovs/mod.ts";
import { launchBare, quitBare } from "../bench/lib/bare_qemu.ts";
import { testNetwork, testOvn } from "../host/ovs/testing.ts";
import { DirPool } from "../host/storage/mod.ts";

const NETWORK = testNetwork("blue", { subnet: "10.77.0.0/24", gateway: "10.77.0.1" });

testWithTimeout({
  name: "OVN: a guest on an overlay network gets its IPAM address from OVN's DHCP",
  timeoutMs: 3 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const { dataDir, ovs, central, chassis, start, stop } = await testOvn("novactl-ovn-guest-");
  const uuid = crypto.randomUUID();
  const tap = tapName(uuid, 0);
  const nic = { vm: "g", nic: 0, network: "blue", ip: "10.77.0.23", mac: "02:6e:76:00:07:17" };
  let qmp: Awaited<ReturnType<typeof launchBare>> | null = null;
  try {
    await t.step(
      "OVN up; the network and the NIC's port written to the northbound DB",
      async () => {
        await start();
        const changes = await applyNorthbound(
          (args) => central.nbctl(args),
          desiredNorthbound([NETWORK], [nic]),
        );
        assert(changes.created.includes(portName("g", 0)), JSON.stringify(changes));
      },
    );

    await t.step("the tap plugged and QEMU booted on it: the port comes up", async () => {
      const user = await qemuUser();
      await plugTap(ovs, chassis.bridge, tap, portName("g", 0), user?.uid ?? null);
      const pool = await new DirPool(`${dataDir}/pool`).init();
      const disk = (await pool.create("g", 64 * 2 ** 20)).path;
      qmp = await launchBare(`${dataDir}/vms`, {
        name: "g",
        memoryMiB: 128,
        disk,
        uuid,
        nics: [{ id: "net0", mac: nic.mac, tap }],
      });
      for (let i = 0; i < 300; i++) {
        if ((await central.nbctl(["lsp-get-up", portName("g", 0)])).trim() === "up") break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assertEquals((await central.nbctl(["lsp-get-up", portName("g", 0)])).trim(), "up");
    });

    await t.step("the guest's agent reports the address IPAM chose, leased by OVN", async () => {
      const agent = new GuestAgent(new QemuDriver(`${dataDir}/vms`).paths("g").qga);
      let seen = "";
      const deadline = Date.now() + 90_000;
      while (Date.now() < deadline) {
        const ifaces = await agent.interfaces({ timeoutMs: 2_000 }).catch(() => []);
        const eth = ifaces.find((i) => i.mac === nic.mac);
        seen = JSON.stringify(eth ?? ifaces);
        if (eth?.addresses.some((a) => a.address === nic.ip)) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert(seen.includes(`"${nic.ip}"`), `the guest's interfaces: ${seen}`);
    });
  } finally {
    if (qmp) await quitBare(qmp);
    await stop(() => unplugTap(ovs, chassis.bridge, tap));
  }
});
