/**
 * The README's main job: starts a local 3-node cluster with real networking
 * (each node in its own network namespace with its own Open vSwitch and
 * ovn-controller, OVN central on the voters), imports the test guest as an
 * image, creates an overlay network and boots two real VMs (QEMU/TCG) on
 * different hosts with a NIC on it. Each guest gets its address from OVN's
 * DHCP and pings the other over geneve; the demo shows the replies from both
 * consoles and exits non-zero if either guest does not get them. Then it waits
 * for Ctrl-C (`--exit` stops at once, for CI).
 */
import { startNetCluster } from "../bench/lib/net_cluster.ts";
import { fetchConsole, guestImportArgs, testGuest } from "../bench/lib/guest.ts";

const keep = !Deno.args.includes("--exit");
const SUBNET = "10.99.0";
const VMS = [
  { name: "demo1", node: "n1", ip: `${SUBNET}.11`, peer: `${SUBNET}.12` },
  { name: "demo2", node: "n2", ip: `${SUBNET}.12`, peer: `${SUBNET}.11` },
];

const t0 = performance.now();
const guest = await testGuest();
console.log("starting 3 nodes, each in its own network namespace with Open vSwitch and OVN ...");
const net = await startNetCluster({ prefix: "novactl-demo-", hosts: 3, voters: 3 });
const cluster = net.cluster;
const server = net.url();

async function novactl(...args: string[]): Promise<void> {
  console.log(`\n$ novactl ${args.join(" ")}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "main.ts",
      ...args,
      "--server",
      server,
      "--token",
      cluster.adminToken,
      "--ca",
      cluster.caFile,
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`novactl ${args[0]} ${args[1] ?? ""} failed`);
}

/** The guest's ping replies from `peer` on its console. */
async function replies(vm: string, peer: string): Promise<string[]> {
  const text = await fetchConsole(server, cluster.adminToken, vm);
  return text.split("\n").filter((l) => l.startsWith(`NV-PING-64 bytes from ${peer}:`));
}

async function untilPings(vm: string, peer: string, timeoutMs = 120_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const seen = await replies(vm, peer);
    if (seen.length >= 3) return seen;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(
    `PING FAILED: ${vm} got no replies from ${peer} within ${timeoutMs} ms; its console ends:\n` +
      (await fetchConsole(server, cluster.adminToken, vm)).slice(-1500),
  );
}

let failed = false;
const udDir = await Deno.makeTempDir();
try {
  await novactl("cluster", "status");
  await novactl(...guestImportArgs(guest, "demo-guest"));
  await novactl("network", "create", "demo-net", "--subnet", `${SUBNET}.0/24`);
  for (const vm of VMS) {
    // The guest pings its peer every second and prints each reply on its console.
    const ud = `${udDir}/${vm.name}.yaml`;
    await Deno.writeTextFile(
      ud,
      "#cloud-config\nruncmd:\n" +
        `  - "while :;do ping -c1 -W1 ${vm.peer}|sed s/^/NV-PING-/;sleep 1;done &"\n`,
    );
    await novactl(
      ...["vm", "create", vm.name, "--image", "demo-guest", "--memory", "128M"],
      ...["--node", vm.node, "--nic", `demo-net,ip=${vm.ip}`, "--user-data", ud, "--wait"],
    );
  }
  await novactl("vm", "list");
  await novactl("network", "show", "demo-net");
  console.log("\nwaiting for the guests to ping each other across the hosts ...");
  for (const vm of VMS) {
    const seen = await untilPings(vm.name, vm.peer);
    console.log(`\n${vm.name} (on ${vm.node}, ${vm.ip}) pings ${vm.peer}:`);
    for (const line of seen.slice(0, 3)) console.log(`  ${line.replace(/^NV-PING-/, "")}`);
  }
  console.log(
    "\nOK: demo1 and demo2 ping each other across hosts over the OVN overlay " +
      `(${Math.round((performance.now() - t0) / 1000)} s since the demo began)`,
  );
  if (keep) {
    console.log(`\nadmin token: ${cluster.adminToken}`);
    console.log(`API: ${server}   CA: ${cluster.caFile}   data dirs and logs: ${cluster.baseDir}`);
    console.log("cluster and VMs running; Ctrl-C stops them");
    Deno.addSignalListener("SIGINT", async () => {
      await net.stop();
      Deno.exit(0);
    });
    await new Promise(() => {});
  }
} catch (err) {
  failed = true;
  console.error(`\ndemo FAILED: ${err instanceof Error ? err.message : err}`);
} finally {
  await Deno.remove(udDir, { recursive: true }).catch(() => {});
  if (!keep || failed) await net.stop();
}
if (failed) Deno.exit(1);
