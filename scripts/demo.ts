/** Starts a local 3-node cluster, shows `cluster status` and `config get`, then waits for Ctrl-C. */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";

const keep = !Deno.args.includes("--exit");
const cluster = new NovactlCluster({ keepBaseDir: true });
await cluster.start(3);
const cli = (...args: string[]) =>
  new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "main.ts",
      ...args,
      "--server",
      cluster.urls[0],
      "--token",
      cluster.adminToken,
    ],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
console.log(`\n$ novactl cluster status --server ${cluster.urls[0]}`);
await cli("cluster", "status");
console.log(`\n$ novactl config set cluster.name demo && novactl config get`);
await cli("config", "set", "cluster.name", "demo");
await cli("config", "get");
console.log(`\nadmin token: ${cluster.adminToken}`);
console.log(`data dirs and logs: ${cluster.baseDir}`);
if (keep) {
  console.log("cluster running; Ctrl-C stops it");
  Deno.addSignalListener("SIGINT", async () => {
    await cluster.stop();
    Deno.exit(0);
  });
  await new Promise(() => {});
}
await cluster.stop();
