/**
 * The 3-node clusters the load benchmarks compare, started once per run and
 * torn down on exit or on SIGINT/SIGTERM.
 */

import { EtcdCluster } from "./etcd.ts";
import { NovactlCluster } from "./novactl_cluster.ts";
import { currentCommit } from "./run_meta.ts";

export const CLUSTER_SIZE = 3;

/** The system name of novactl started with `--insecure-http` (plain HTTP on loopback). */
export const PLAIN_SYSTEM = "novactl-plain";

/** Stop functions of clusters that are (or may be) running, for signal-time cleanup. */
const activeStops = new Set<() => Promise<void>>();

export async function stopAll(): Promise<void> {
  const stops = [...activeStops];
  activeStops.clear();
  await Promise.allSettled(stops.map((stop) => stop()));
}

/** Stops every cluster on SIGINT/SIGTERM, so an interrupted run leaves no processes behind. */
export function installSignalTeardown(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      console.error(`\n${signal}: stopping clusters...`);
      stopAll().finally(() => Deno.exit(130));
    });
  }
}

export interface RunningEtcd {
  cluster: EtcdCluster;
  version: string;
}

export async function startEtcd(baseDir: string): Promise<RunningEtcd> {
  const cluster = new EtcdCluster({ baseDir: `${baseDir}/etcd` });
  activeStops.add(() => cluster.stop());
  await timed("etcd", () => cluster.start(CLUSTER_SIZE));
  return { cluster, version: await cluster.version() };
}

export interface RunningNovactl {
  cluster: NovactlCluster;
  version: string;
}

/**
 * Starts a 3-node novactl cluster: HTTPS with signed peer requests (the default), or, with
 * `insecureHttp`, plain HTTP on loopback — the same code without TLS, so a run can put a
 * figure on what TLS and peer authentication cost.
 */
export async function startNovactl(
  baseDir: string,
  opts: { insecureHttp?: boolean; extraNodeArgs?: string[] } = {},
): Promise<RunningNovactl> {
  const name = opts.insecureHttp ? PLAIN_SYSTEM : "novactl";
  const cluster = new NovactlCluster({
    baseDir: `${baseDir}/${name}`,
    insecureHttp: opts.insecureHttp,
    extraNodeArgs: opts.extraNodeArgs,
  });
  activeStops.add(() => cluster.stop());
  await timed(name, () => cluster.start(CLUSTER_SIZE));
  return { cluster, version: await currentCommit() };
}

async function timed(name: string, start: () => Promise<unknown>): Promise<void> {
  console.log(`== ${name}: starting ${CLUSTER_SIZE}-node cluster`);
  const started = Date.now();
  await start();
  console.log(`   ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

export function base64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/** Where the result goes: `--out`, or `bench/results/NAME.json`. */
export function defaultOut(name: string): string {
  return new URL(`../results/${name}.json`, import.meta.url).pathname;
}

export async function writeResult(path: string, result: unknown): Promise<void> {
  await Deno.mkdir(new URL(".", `file://${path}`).pathname, { recursive: true });
  await Deno.writeTextFile(path, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\nJSON written to ${path}; render BENCHMARKS.md with \`deno task bench:report\``);
}
