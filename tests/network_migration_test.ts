/**
 * Live migration keeps the network: two real nodes in two network namespaces
 * (bench/lib/net_cluster.ts), an overlay network, guest A on n1 pinging guest
 * B every 100 ms while B live-migrates n1 → n2 and back. B keeps its IP and
 * MAC, the pings resume, and at most a few are lost each way (the count is
 * printed). While B moves, its logical port is bound to both hosts with RARP
 * activation (`requested-chassis=n1,n2`, `activation-strategy=rarp`), then to
 * its new host alone: the leader's northbound pass wrote it from the
 * replicated migration mark.
 */
import { type NetCluster, startNetCluster } from "../bench/lib/net_cluster.ts";
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { migrateUnderPing, pingerUserData, pingsInPause } from "../bench/lib/net_migration.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { eventually, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Vm {
  name: string;
  node: string;
  state: string;
  nics: { network: string; ip: string; mac: string }[];
  guest?: { interfaces?: { mac: string; addresses: string[] }[] };
}

const SUBNET = "10.92.0";
const A = { name: "pa", node: "n1", ip: `${SUBNET}.10` };
const B = { name: "pb", node: "n1", ip: `${SUBNET}.11` };
/**
 * Lost pings (100 ms apart) a migration may cost beyond those sent while the guest itself was
 * paused: OVN's switch of the port. The pause is the CPU's business (TCG on a loaded 2-core
 * machine pauses 100–350 ms); the network's share is what this test holds to a bound.
 */
const MAX_LOST_BEYOND_PAUSE = 3;

testWithTimeout({
  name: "networks: a guest live-migrates under a 100 ms ping and keeps its IP, MAC and traffic",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  let net = null as NetCluster | null;
  const ok = (...args: string[]) => net!.ok(...args);
  const show = async (name: string) => (await net!.api<Vm>(`/api/v1/vms/${name}`)).body;
  const optionsOf = async (port: string) =>
    (await net!.nbctl("get", "Logical_Switch_Port", port, "options")).trim();

  try {
    await step(t, "two nodes, an overlay network, guest A pinging guest B", async () => {
      net = await startNetCluster({ prefix: "novactl-netmig-", hosts: 2, voters: 1 });
      await ok(...guestImportArgs(guest, "guest"));
      await ok("network", "create", "blue", "--type", "overlay", "--subnet", `${SUBNET}.0/24`);
      const dir = await Deno.makeTempDir();
      try {
        const ud = `${dir}/pa.yaml`;
        await Deno.writeTextFile(ud, pingerUserData(B.ip));
        await ok(
          ...["vm", "create", B.name, "--image", "guest", "--memory", "128M"],
          ...["--node", B.node, "--nic", `blue,ip=${B.ip}`, "--wait"],
        );
        await ok(
          ...["vm", "create", A.name, "--image", "guest", "--memory", "128M"],
          ...["--node", A.node, "--nic", `blue,ip=${A.ip}`, "--user-data", ud, "--wait"],
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      // Placed and running: the port is requested on its host alone.
      await eventually(
        "pb's port requested on n1",
        async () => (await optionsOf("nv-pb-0")).includes(`requested-chassis=n1`) || undefined,
        10_000,
      );
    });

    const before = await show(B.name);
    for (const [from, to] of [["n1", "n2"], ["n2", "n1"]]) {
      await step(t, `B live-migrates ${from} → ${to}; A's pings lose at most a few`, async () => {
        const r = await migrateUnderPing(net!, {
          pinger: A.name,
          target: B.name,
          peerIp: B.ip,
          to,
          port: "nv-pb-0",
        });
        console.log(
          `migration ${from} → ${to}: ${r.lost} of ${
            r.lost + r.answered
          } pings lost (longest outage ${r.longestGap} × 100 ms); migrate ${r.migrateMs} ms, ` +
            `QEMU downtime ${r.result.qemuDowntimeMs} ms, guest paused ${r.result.guestPausedMs} ms`,
        );
        console.log(`  port options seen while moving: ${r.portOptions.join(" | ")}`);
        console.log(`  port binding options seen: ${r.bindingOptions.join(" | ")}`);
        assert(
          r.portOptions.includes(`activation-strategy=rarp requested-chassis=${from},${to}`),
          `multi-chassis binding while migrating: ${r.portOptions.join(" | ")}`,
        );
        const allowed = pingsInPause(Number(r.result.guestPausedMs)) + MAX_LOST_BEYOND_PAUSE;
        assert(
          r.lost <= allowed,
          `${r.lost} pings lost; at most ${allowed} (the guest's ${r.result.guestPausedMs} ms ` +
            `pause, plus ${MAX_LOST_BEYOND_PAUSE})`,
        );
        assertEquals(await optionsOf("nv-pb-0"), `{requested-chassis=${to}}`);
        const vm = await show(B.name);
        assertEquals([vm.node, vm.state], [to, "running"]);
        // The record's fields (beside them, `vm show` gives the guest-address check, which
        // follows the guest agent's reports).
        const nic = (n: { network: string; ip: string; mac: string }) => [n.network, n.ip, n.mac];
        assertEquals(vm.nics.map(nic), before.nics.map(nic), "the same NIC: network, IP and MAC");
      });
    }

    await step(t, "B's guest still holds its address on its MAC (guest agent)", async () => {
      await eventually("pb's agent reports its address", async () => {
        const v = await show(B.name);
        const eth = v.guest?.interfaces?.find((i) => i.mac === before.nics[0].mac);
        return eth?.addresses.includes(`${B.ip}/24`) || undefined;
      }, 60_000);
    });
  } catch (err) {
    await net?.diagnose([A.name, B.name]).catch((e) => console.error("diagnose:", e));
    throw err;
  } finally {
    await net?.stop();
  }
});
