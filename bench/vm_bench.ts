/**
 * VM start benchmark, on a 3-node cluster whose data dirs are on disk (default /var/tmp; not
 * tmpfs, so every Raft commit pays its fsyncs on a quorum).
 *
 *   deno task bench:vm [--reps 3] [--samples 20] [--concurrent 50] [--memory 128] [--dir /var/tmp]
 *
 * 1. Start overhead: novactl (API `POST /api/v1/vms` → state `running`, placed by the scheduler,
 *    committed through Raft, started by a host, reported back) against the anchor, a bare
 *    `qemu-system-x86_64` launch of the same guest with the driver's arguments, not paused
 *    (spawn → QMP `running`), its disk on the same filesystem. Strictly alternating in one run:
 *    novactl, bare, novactl, bare, … `--samples` pairs per repetition, `--reps` repetitions.
 *    Overhead is the difference within each pair.
 * 2. `--concurrent` VMs created at once on the same cluster: every one must reach running with
 *    no error.
 *
 * Both use the test guest (scripts/build_guest.sh) under TCG. Writes bench/results/vm.json
 * (`VmBenchResult`).
 */
import { type GuestCluster, startGuestCluster } from "./lib/guest_cluster.ts";
import { type Figure, figure } from "./lib/figures.ts";
import { timeBareStart } from "./lib/bare_qemu.ts";
import { qemusMatching } from "./lib/qemu_procs.ts";
import { type RunMeta, runMeta } from "./lib/run_meta.ts";
import { sleep } from "./lib/util.ts";

/** What bench/results/vm.json holds; every figure in ms is a `Figure` (median, min, max, n). */
export interface VmBenchResult {
  meta: RunMeta;
  setup: {
    nodes: number;
    memoryMiB: number;
    reps: number;
    samplesPerRep: number;
    order: "novactl, bare, alternating";
  };
  start: {
    /** API create → running, every sample of every repetition. */
    novactlMs: Figure;
    /** Bare QEMU spawn → QMP running, every sample. */
    bareMs: Figure;
    /** novactl minus bare within each pair, every pair. */
    overheadMs: Figure;
    /** The median overhead of each repetition: how much the repetitions agree. */
    overheadRepMediansMs: Figure;
  };
  concurrent: {
    vms: number;
    memoryMiB: number;
    /** First create sent → every VM running (one sample: n 1). */
    allRunningMs: Figure;
    createErrors: number;
    startErrors: number;
    /** QEMU processes found on all nodes afterwards (should equal `vms`). */
    qemuProcesses: number;
    firstErrors: string[];
  };
}

function flag(name: string, def: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}

function stringFlag(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : def;
}

const NODES = 3;
const REPS = flag("reps", 3);
const SAMPLES = flag("samples", 20);
const CONCURRENT = flag("concurrent", 50);
const MEMORY = flag("memory", 128);
const DIR = stringFlag("dir", "/var/tmp");

interface VmView {
  state: string;
  reason: string | null;
}

/** The node answers when the state is applied: a server-side long-poll, no polling load on it. */
async function waitRunning(g: GuestCluster, name: string): Promise<void> {
  for (;;) {
    const vm = await g.api<VmView>("GET", `/api/v1/vms/${name}/wait?state=running&timeoutMs=60000`);
    if (vm.state === "running") return;
    if (vm.state === "failed") throw new Error(`${name} failed: ${vm.reason}`);
  }
}

async function waitNoVms(g: GuestCluster): Promise<void> {
  while ((await g.api<{ vms: unknown[] }>("GET", "/api/v1/vms")).vms.length) await sleep(100);
}

/** API create → running, in ms; the VM is deleted afterwards and the cluster left with none. */
async function novactlStart(g: GuestCluster, name: string): Promise<number> {
  const t0 = performance.now();
  await g.api("POST", "/api/v1/vms", { name, image: "guest", memoryMiB: MEMORY });
  await waitRunning(g, name);
  const ms = performance.now() - t0;
  await g.api("DELETE", `/api/v1/vms/${name}?force=true`);
  await waitNoVms(g); // the next sample starts on a quiet cluster
  return ms;
}

interface Pair {
  novactl: number;
  bare: number;
}

/** One repetition: `SAMPLES` pairs, novactl then bare each time. */
async function repetition(g: GuestCluster, work: string, rep: number): Promise<Pair[]> {
  const pairs: Pair[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const novactl = await novactlStart(g, `ov${rep}-${i}`);
    const bare = await timeBareStart(work, `bare${rep}-${i}`, MEMORY);
    pairs.push({ novactl, bare });
  }
  return pairs;
}

async function measureStart(g: GuestCluster, work: string): Promise<VmBenchResult["start"]> {
  const pairs: Pair[] = [];
  const repMedians: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    const these = await repetition(g, work, rep);
    pairs.push(...these);
    repMedians.push(figure(these.map((p) => p.novactl - p.bare)).median);
    console.log(`rep ${rep + 1}:`, JSON.stringify(these.map((p) => [p.novactl, p.bare])));
  }
  return {
    novactlMs: figure(pairs.map((p) => p.novactl), 1),
    bareMs: figure(pairs.map((p) => p.bare), 1),
    overheadMs: figure(pairs.map((p) => p.novactl - p.bare), 1),
    overheadRepMediansMs: figure(repMedians, 1),
  };
}

async function measureConcurrent(g: GuestCluster): Promise<VmBenchResult["concurrent"]> {
  // 50 one-vCPU guests with 1 GiB thin disks on a 2-core machine: allow the overcommit that
  // takes (defaults: CPU 4:1, disk 1:1, which count thin disks at full size).
  await g.api("PATCH", "/api/v1/config", {
    "scheduler.overcommit.cpu": 32,
    "scheduler.overcommit.disk": 8,
  });
  const t0 = performance.now();
  const rejected = (rs: PromiseSettledResult<unknown>[]) =>
    rs.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) =>
      String(r.reason)
    );
  const names = Array.from({ length: CONCURRENT }, (_, i) => `burst${i}`);
  const createErrors = rejected(
    await Promise.allSettled(
      names.map((name) =>
        g.api("POST", "/api/v1/vms", { name, image: "guest", memoryMiB: MEMORY })
      ),
    ),
  );
  const startErrors = rejected(await Promise.allSettled(names.map((n) => waitRunning(g, n))));
  const allRunningMs = figure([performance.now() - t0], 0);
  const qemuProcesses = (await qemusMatching(`${g.base}/n`)).length;
  return {
    vms: CONCURRENT,
    memoryMiB: MEMORY,
    allRunningMs,
    createErrors: createErrors.length,
    startErrors: startErrors.length,
    qemuProcesses,
    firstErrors: [...createErrors, ...startErrors].slice(0, 5),
  };
}

const g = await startGuestCluster(NODES, { dir: DIR });
// The anchor's disks sit next to the nodes' data dirs, on the same filesystem.
const work = await Deno.makeTempDir({ dir: g.base, prefix: "bare-" });
try {
  const meta0 = await runMeta("vm", { dataDir: g.base, runs: REPS });
  // Warm up once (first pull of the image into each host's blob store, accelerator probe).
  for (const node of g.cluster.nodes) {
    await g.api("POST", "/api/v1/vms", {
      name: `warm-${node.name}`,
      image: "guest",
      memoryMiB: MEMORY,
      node: node.name,
    });
    await waitRunning(g, `warm-${node.name}`);
    await g.api("DELETE", `/api/v1/vms/warm-${node.name}?force=true`);
  }
  await waitNoVms(g);
  await timeBareStart(work, "warmup", MEMORY);

  const start = await measureStart(g, work);
  console.log("start (ms):", JSON.stringify(start));
  const concurrent = await measureConcurrent(g);
  console.log("concurrent creates:", JSON.stringify(concurrent));
  const result: VmBenchResult = {
    meta: { ...meta0, date: new Date().toISOString() },
    setup: {
      nodes: NODES,
      memoryMiB: MEMORY,
      reps: REPS,
      samplesPerRep: SAMPLES,
      order: "novactl, bare, alternating",
    },
    start,
    concurrent,
  };
  const out = stringFlag("out", new URL("./results/vm.json", import.meta.url).pathname);
  await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
  console.log(`wrote ${out}`);
} finally {
  await g.stop();
}
