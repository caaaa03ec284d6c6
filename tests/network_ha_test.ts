/**
 * NICs follow a VM that drain or HA moves: three hosts with networking, each in its own
 * network namespace. An HA VM with a NIC at a static address on n2 and a guest on n1 that pings
 * it. `node drain n2` live-migrates the VM (to n3: n1 is cordoned) and the pings go on; then n3
 * is killed outright (node process, fencing watchdog, QEMU, OVS and OVN daemons: everything in
 * its namespace) and HA restarts the VM on n2, where it boots again, gets the same address by
 * DHCP on the same MAC, and answers the guest on n1 again. A non-HA VM on the shared pool that
 * was on n3 too is moved by `node evacuate n3` and pings the guest on n1 from its new host.
 * When n3 comes back, it removes the taps it still had for both, and nothing changes for them.
 */
import { type NetCluster, startNetCluster } from "../bench/lib/net_cluster.ts";
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { assertEquals } from "../core/testing/assert.ts";
import { eventually, step } from "./support/api.ts";
import { createPinger, leased, pings, pingsFrom, showVm } from "./support/net_guests.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

const SUBNET = "10.95.0";
const GW_IP = `${SUBNET}.10`;
const HA_IP = `${SUBNET}.20`;
const EV_IP = `${SUBNET}.30`;

testWithTimeout({
  name: "networks: drain, an HA restart and evacuate bring NICs up on the new host",
  timeoutMs: 12 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  let net = null as NetCluster | null;
  const n = () => net!;
  const vms = ["gw", "ha1", "ev1"];
  /** Replies gw has seen from ha1 so far. */
  const gwReplies = async () => pings(await n().consoleOf("gw"), HA_IP).length;
  let mac = "";

  try {
    await step(t, "three hosts with networking, a shared pool for HA", async () => {
      const t0 = performance.now();
      net = await startNetCluster({ prefix: "novactl-netha-", hosts: 3, voters: 1 });
      console.log(`3 hosts with networking in ${ms(t0)} ms`);
      const shared = `${n().cluster.baseDir}/shared`;
      await Deno.mkdir(shared, { recursive: true });
      await n().ok("config", "set", "storage.sharedDir", shared);
      await n().ok(...guestImportArgs(guest, "guest"));
      await n().ok("network", "create", "blue", "--subnet", `${SUBNET}.0/24`);
    });

    await step(t, "an HA VM with a NIC on n2, pinged by a guest on n1", async () => {
      await createPinger(n(), { name: "gw", node: "n1", nic: `blue,ip=${GW_IP}`, peer: HA_IP });
      await createPinger(n(), {
        name: "ha1",
        node: "n2",
        nic: `blue,ip=${HA_IP}`,
        peer: GW_IP,
        extra: ["--ha"],
      });
      const vm = await leased(n(), "ha1", HA_IP);
      mac = vm.nics[0].mac;
      await leased(n(), "gw", GW_IP);
      await pingsFrom(n(), "gw", HA_IP);
      await pingsFrom(n(), "ha1", GW_IP);
      // Later moves go to the host not named: n1 takes nothing new.
      await n().ok("node", "cordon", "n1");
    });

    await step(t, "node drain n2: the VM live-migrates to n3 and the pings go on", async () => {
      const t0 = performance.now();
      const op = JSON.parse(await n().ok("node", "drain", "n2", "-o", "json"));
      // Counted once the VM runs on n3 alone: the replies awaited below come from there.
      const before = await gwReplies();
      assertEquals(op.state, "succeeded", JSON.stringify(op));
      const drained = performance.now() - t0;
      const vm = await showVm(n(), "ha1");
      assertEquals(vm.node, "n3");
      assertEquals(vm.nics.map((x) => [x.ip, x.mac]), [[HA_IP, mac]]);
      await pingsFrom(n(), "gw", HA_IP, { after: before });
      console.log(
        `drain ${Math.round(drained)} ms; gw has 3 more replies from ha1 ${
          ms(t0)
        } ms after the drain began`,
      );
      await n().ok("node", "uncordon", "n2");
    });

    await step(t, "a non-HA VM on the shared pool on n3, pinging gw", async () => {
      // HA does not restart it when n3 dies: `node evacuate` moves it below.
      await createPinger(n(), {
        name: "ev1",
        node: "n3",
        nic: `blue,ip=${EV_IP}`,
        peer: GW_IP,
        extra: ["--pool", "shared"],
      });
      await pingsFrom(n(), "ev1", GW_IP);
    });

    await step(t, "n3 killed: HA restarts the VM on n2 with its IP and MAC", async () => {
      const t0 = performance.now();
      await n().killHost("n3");
      const before = await gwReplies();
      const vm = await eventually("ha1 running on n2", async () => {
        const v = await showVm(n(), "ha1");
        return v.node === "n2" && v.state === "running" ? v : undefined;
      }, 120_000);
      const moved = performance.now() - t0;
      assertEquals(vm.nics.map((x) => [x.ip, x.mac]), [[HA_IP, mac]]);
      // A new boot: the guest asks OVN's DHCP on n2 for its address again.
      await leased(n(), "ha1", HA_IP);
      const leasedAt = performance.now() - t0;
      await pingsFrom(n(), "gw", HA_IP, { after: before });
      await pingsFrom(n(), "ha1", GW_IP);
      console.log(
        `after the kill: running on n2 at ${Math.round(moved)} ms, leased ${HA_IP} at ` +
          `${Math.round(leasedAt)} ms, 3 more replies to gw at ${ms(t0)} ms`,
      );
    });

    await step(t, "node evacuate n3: the non-HA VM restarts on n2 and pings gw", async () => {
      const t0 = performance.now();
      const before = (await showVm(n(), "ev1")).nics.map((x) => [x.ip, x.mac]);
      const op = JSON.parse(await n().ok("node", "evacuate", "n3", "-o", "json"));
      assertEquals(op.state, "succeeded", JSON.stringify(op));
      const vm = await eventually("ev1 running on n2", async () => {
        const v = await showVm(n(), "ev1");
        return v.node === "n2" && v.state === "running" ? v : undefined;
      }, 120_000);
      assertEquals(vm.nics.map((x) => [x.ip, x.mac]), before);
      await leased(n(), "ev1", EV_IP);
      await pingsFrom(n(), "ev1", GW_IP);
      console.log(`evacuated, leased ${EV_IP} and pinging gw in ${ms(t0)} ms`);
    });

    await step(t, "n3 back: it keeps no tap of the VMs that left it; they still ping", async () => {
      const t0 = performance.now();
      await n().restartHost("n3");
      const taps = async () =>
        (await n().sh("n3", ["ovs-vsctl", "list-ports", "br-int"])).split("\n")
          .filter((p) => p.startsWith("nt"));
      console.log(`n3 restarted in ${ms(t0)} ms; its taps then: ${await taps().catch(String)}`);
      await eventually("no tap left on n3", async () => (await taps()).length === 0, 30_000);
      const before = await gwReplies();
      await pingsFrom(n(), "gw", HA_IP, { after: before });
      console.log(`n3's taps gone and gw pinging ha1 ${ms(t0)} ms after the restart began`);
    });
  } catch (err) {
    await net?.diagnose(vms).catch((e) => console.error("diagnose:", e));
    throw err;
  } finally {
    await net?.stop();
  }
});

function ms(t0: number): number {
  return Math.round(performance.now() - t0);
}
