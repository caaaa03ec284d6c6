/**
 * Clusters of simulated hosts (`node start --simulated-host`) for scale benchmarks and
 * tests: their node arguments, a tiny kernel image to reference, and many stopped VMs.
 */
import type { NovactlCluster } from "./novactl_cluster.ts";
import { requestJson } from "./util.ts";

/** `node start` arguments for a simulated host of this size. */
export function simulatedHostArgs(cpus: number, memoryMiB: number): string[] {
  return [
    "--simulated-host",
    "--simulated-cpus",
    String(cpus),
    "--simulated-memory",
    String(memoryMiB),
  ];
}

/** Imports a 4 KiB kernel image `name` (VMs only reference it: simulated hosts boot nothing). */
export async function importTinyKernel(cluster: NovactlCluster, name: string): Promise<void> {
  const kernel = `${cluster.baseDir}/${name}-kernel`;
  await Deno.writeFile(kernel, new Uint8Array(4096));
  await cluster.cli([
    "image",
    "import",
    name,
    "--kernel",
    kernel,
    "--server",
    await cluster.leaderUrl(),
    "--token",
    cluster.adminToken,
  ]);
}

/**
 * Creates VMs `body(0)` … `body(count - 1)` through the leader's API, `clients` at a time;
 * any answer but 201 (or 202, a create that starts, with its operation) fails it.
 */
export async function createVms(
  cluster: NovactlCluster,
  count: number,
  clients: number,
  body: (i: number) => Record<string, unknown>,
): Promise<void> {
  const leader = await cluster.leaderUrl();
  let next = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    for (let i = next++; i < count; i = next++) {
      const r = await requestJson(`${leader}/api/v1/vms`, {
        body: body(i),
        token: cluster.adminToken,
        timeoutMs: 60_000,
      });
      if (r.status !== 201 && r.status !== 202) {
        throw new Error(`create #${i}: ${r.status} ${JSON.stringify(r.body)}`);
      }
    }
  }));
}
