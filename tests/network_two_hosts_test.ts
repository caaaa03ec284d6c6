/**
 * Networks through the product path, across hosts: two real nodes, each in
 * its own network namespace (bench/lib/netns.ts), each bringing up its own
 * Open vSwitch and ovn-controller at `node start`, the voter running the
 * clustered OVN central. An overlay network made through the REST API, one
 * VM pinned to each host with a NIC on it: each guest gets its IPAM address
 * from OVN's DHCP, and the guests ping each other over geneve. Then
 * ovn-controller is killed on one host: the node's supervisor starts it
 * again, counts it in /metrics, and the pings go on.
 */
import { type NetCluster, startNetCluster } from "../bench/lib/net_cluster.ts";
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { clusterFetch } from "../bench/lib/tls.ts";
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

const SUBNET = "10.91.0";
const GUESTS = [
  { name: "ga", node: "n1", ip: `${SUBNET}.10`, peer: `${SUBNET}.11` },
  { name: "gb", node: "n2", ip: `${SUBNET}.11`, peer: `${SUBNET}.10` },
];

/** Ping lines the guest printed (`NV-PING-64 bytes from PEER: ... time=T ms`), as RTTs. */
function pings(consoleText: string, peer: string): number[] {
  const re = new RegExp(
    `NV-PING-64 bytes from ${peer.replace(/\./g, "\\.")}:.*time=([\\d.]+)`,
    "g",
  );
  return [...consoleText.matchAll(re)].map((m) => Number(m[1]));
}

testWithTimeout({
  name: "networks: two hosts, one overlay; guests get IPAM addresses by DHCP and ping over geneve",
  timeoutMs: 8 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  // Set inside a step (a closure), which TypeScript does not see narrowing it.
  let net = null as NetCluster | null;
  const cluster = () => net!.cluster;
  const ok = (...args: string[]) => net!.ok(...args);
  const show = async (name: string) => (await net!.api<Vm>(`/api/v1/vms/${name}`)).body;
  const consoleOf = (name: string) => net!.consoleOf(name);
  const pidFile = (node: string, daemon: string) =>
    `${cluster().node(node).dataDir}/ovs/run/${daemon}.pid`;
  const pidOf = async (node: string, daemon: string) =>
    Number((await Deno.readTextFile(pidFile(node, daemon)).catch(() => "0")).trim());

  try {
    await step(t, "two nodes in two namespaces bring their networking up", async () => {
      const t0 = performance.now();
      // Waits for ovn-controller on every host: a joining host starts its chassis once it
      // knows the voters' southbound remotes.
      net = await startNetCluster({ prefix: "novactl-net2-", hosts: 2, voters: 1 });
      console.log(
        `cluster with networking, ovn-controller on both hosts, in ${
          Math.round(performance.now() - t0)
        } ms`,
      );
      // The voter runs the clustered central; the learner does not.
      const ovnRun = (n: string) => `${cluster().node(n).dataDir}/ovn/run/ovnsb_db.pid`;
      assert(await Deno.stat(ovnRun("n1")).then(() => true, () => false), "n1 runs central");
      assert(!(await Deno.stat(ovnRun("n2")).then(() => true, () => false)), "n2 does not");
      await ok(...guestImportArgs(guest, "guest"));
    });

    await step(t, "an overlay network through the REST API", async () => {
      const r = await net!.api("/api/v1/networks", {
        method: "POST",
        body: { name: "blue", type: "overlay", subnet: `${SUBNET}.0/24` },
      });
      assertEquals(r.status, 201, JSON.stringify(r.body));
    });

    await step(t, "a VM on each host with a NIC on it", async () => {
      const dir = await Deno.makeTempDir();
      try {
        for (const g of GUESTS) {
          const ud = `${dir}/${g.name}.yaml`;
          await Deno.writeTextFile(
            ud,
            "#cloud-config\nruncmd:\n" +
              // Short: the seed's YAML folds long lines, which the test guest's parser cannot join.
              `  - "while :;do ping -c1 -W1 ${g.peer}|sed s/^/NV-PING-/;sleep 1;done &"\n`,
          );
          await ok(
            ...["vm", "create", g.name, "--image", "guest", "--memory", "128M"],
            ...["--node", g.node, "--nic", `blue,ip=${g.ip}`, "--user-data", ud, "--wait"],
          );
          const vm = await show(g.name);
          assertEquals(vm.node, g.node);
          assertEquals(vm.nics.map((n) => n.ip), [g.ip]);
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });

    await step(t, "each guest holds its IPAM address, leased by OVN's DHCP", async () => {
      for (const g of GUESTS) {
        const vm = await eventually(`${g.name}'s agent reports ${g.ip}`, async () => {
          const v = await show(g.name);
          const eth = v.guest?.interfaces?.find((i) => i.mac === v.nics[0].mac);
          return eth?.addresses.includes(`${g.ip}/24`) ? v : undefined;
        }, 120_000);
        assertEquals(vm.state, "running");
      }
    });

    await step(t, "the guests ping each other across the hosts", async () => {
      const rtts: number[] = [];
      for (const g of GUESTS) {
        const seen = await eventually(`${g.name} pings ${g.peer}`, async () => {
          const p = pings(await consoleOf(g.name), g.peer);
          return p.length >= 3 ? p : undefined;
        }, 60_000);
        rtts.push(...seen);
      }
      rtts.sort((a, b) => a - b);
      console.log(`ping RTT ms: median ${rtts[rtts.length >> 1]}, max ${rtts[rtts.length - 1]}`);
    });

    await step(t, "ovn-controller killed on n2: the supervisor starts it again", async () => {
      const before = await pidOf("n2", "ovn-controller");
      const t0 = performance.now();
      Deno.kill(before, "SIGKILL");
      const after = await eventually("a new ovn-controller on n2", async () => {
        const pid = await pidOf("n2", "ovn-controller");
        return pid > 0 && pid !== before &&
          await Deno.stat(`/proc/${pid}`).then(() => pid, () => 0);
      }, 15_000);
      console.log(`ovn-controller back in ${Math.round(performance.now() - t0)} ms (pid ${after})`);
      const metrics = await (await clusterFetch(`${cluster().node("n2").url}/metrics`)).text();
      assert(
        /novactl_network_daemon_restarts_total\{daemon="ovn-controller"\} [1-9]/.test(metrics),
        metrics.split("\n").filter((l) => l.includes("network")).join("\n"),
      );
      const [ga] = GUESTS;
      const count = pings(await consoleOf(ga.name), ga.peer).length;
      await eventually("pings go on after the restart", async () => {
        return pings(await consoleOf(ga.name), ga.peer).length >= count + 3 || undefined;
      }, 30_000);
    });

    await step(
      t,
      "ovs-vswitchd killed on n2: started again, the tunnel and pings come back",
      async () => {
        const before = await pidOf("n2", "ovs-vswitchd");
        const t0 = performance.now();
        Deno.kill(before, "SIGKILL");
        await eventually("a new ovs-vswitchd on n2", async () => {
          const pid = await pidOf("n2", "ovs-vswitchd");
          return pid > 0 && pid !== before &&
              await Deno.stat(`/proc/${pid}`).then(() => true, () => false) || undefined;
        }, 15_000);
        const back = performance.now() - t0;
        const [ga] = GUESTS;
        const count = pings(await consoleOf(ga.name), ga.peer).length;
        await eventually("pings go on after the restart", async () => {
          return pings(await consoleOf(ga.name), ga.peer).length >= count + 3 || undefined;
        }, 30_000);
        console.log(
          `ovs-vswitchd back in ${Math.round(back)} ms; 3 more pings ${
            Math.round(performance.now() - t0)
          } ms after the kill`,
        );
        // The node's API answers on its moved address again.
        assertEquals((await clusterFetch(`${cluster().node("n2").url}/healthz`)).status, 200);
      },
    );
  } catch (err) {
    await net?.diagnose(GUESTS.map((g) => g.name)).catch((e) => console.error("diagnose:", e));
    throw err;
  } finally {
    // Stops the nodes, kills what still runs in the namespaces (OVS/OVN daemons, QEMU) and
    // deletes them with their bridges and taps.
    await net?.stop();
  }
});
