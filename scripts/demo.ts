/**
 * The README's main job: starts a local 3-node cluster, imports the test
 * guest as an image, boots a real VM (QEMU/TCG) on it and shows its console,
 * then waits for Ctrl-C (`--exit` stops at once, for CI).
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { fetchConsole, guestImportArgs, testGuest } from "../bench/lib/guest.ts";

const keep = !Deno.args.includes("--exit");
const guest = await testGuest();
const cluster = new NovactlCluster({ keepBaseDir: true });
await cluster.start(3);
const server = cluster.urls[0];

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

async function untilConsoleShows(vm: string, marker: RegExp, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (marker.test(await fetchConsole(server, cluster.adminToken, vm))) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${vm} did not print ${marker} within ${timeoutMs} ms`);
}

try {
  await novactl("cluster", "status");
  await novactl(...guestImportArgs(guest, "demo-guest"));
  await novactl("vm", "create", "demo1", "--image", "demo-guest", "--memory", "256M", "--wait");
  await untilConsoleShows("demo1", /NOVACTL-COUNTER 2/);
  await novactl("vm", "list");
  await novactl("vm", "console", "demo1", "--bytes", "600");
  console.log(`\nadmin token: ${cluster.adminToken}`);
  console.log(`API: ${server}   data dirs and logs: ${cluster.baseDir}`);
  if (keep) {
    console.log("cluster and VM running; Ctrl-C stops them");
    Deno.addSignalListener("SIGINT", async () => {
      await cluster.stop();
      Deno.exit(0);
    });
    await new Promise(() => {});
  }
} finally {
  if (!keep) await cluster.stop();
}
