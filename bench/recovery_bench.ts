/**
 * Disaster-recovery figures on a real one-voter ClusterNode in one process:
 *
 *   deno run -A bench/recovery_bench.ts [--vms 10000]
 *
 * Records `--vms` VMs (on two hosts, with labels), then times on the same SQLite files:
 * a cluster backup on the leader (ReadIndex, snapshot, hash, stream to a file), its
 * verification (`readBackup`, what `cluster backup` and `--restore` do first), a restore
 * into a new data dir (`node start --restore` before the node starts) and a forced new
 * cluster on the stopped node's data dir (`cluster recover --force-new-cluster`).
 * Prints one JSON line (sizes, milliseconds, peak resident memory); nothing is asserted.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { TestCluster } from "../core/testing/test_cluster.ts";
import {
  forceNewCluster,
  openClusterBackup,
  readBackup,
  restoreDataDir,
} from "../core/recovery/mod.ts";

const { values } = parseArgs({ args: Deno.args, options: { vms: { type: "string" } } });
const count = Number(values.vms ?? 10_000);
const roomy = { memoryMiB: 100_000_000, cpus: 1_000_000 };
const cluster = await TestCluster.start(roomy);
const dir = await Deno.makeTempDir({ prefix: "novactl-recovery-bench-" });
const ms = (t0: number) => Math.round(performance.now() - t0);
try {
  await cluster.addHost("n2", roomy);
  for (let i = 0; i < count; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, count - i) }, (_, k) =>
        cluster.vm(
          { name: `vm${i + k}`, node: (i + k) % 2 ? "n1" : "n2", labels: { tier: "web" } },
          "stopped",
        )),
    );
  }
  const file = join(dir, "cluster.backup");
  let t0 = performance.now();
  await cluster.node.linearizableRead();
  const { body } = await openClusterBackup(cluster.node);
  const out = await Deno.open(file, { write: true, create: true, truncate: true, mode: 0o600 });
  await body.pipeTo(out.writable);
  const backupMs = ms(t0);
  t0 = performance.now();
  await readBackup(file);
  const verifyMs = ms(t0);
  t0 = performance.now();
  const restored = await restoreDataDir({
    dataDir: join(dir, "restored"),
    file,
    name: "n1",
    url: "http://127.0.0.1:9",
  });
  const restoreMs = ms(t0);
  await cluster.node.stop();
  t0 = performance.now();
  const forced = await forceNewCluster(cluster.dataDir);
  const forceMs = ms(t0);
  console.log(JSON.stringify({
    vms: count,
    backupBytes: (await Deno.stat(file)).size,
    backupMs,
    verifyMs,
    restoreMs,
    restoredVms: restored.vms,
    forceNewClusterMs: forceMs,
    forcedVms: forced.vms,
    peakRssMiB: Math.round(Deno.memoryUsage().rss / 2 ** 20),
  }));
} finally {
  await cluster.stop();
  await Deno.remove(dir, { recursive: true });
}
