/**
 * VM start benchmark.
 *
 *   deno run -A bench/vm_bench.ts [--runs 20] [--concurrent 50] [--memory 128]
 *
 * 1. Platform overhead: (API create → VM running per QMP, as reported back
 *    through Raft) minus (bare `qemu-system-x86_64` launch of the same VM, same
 *    arguments, → QMP `running`). Both run alternately in the same process and
 *    run, `--runs` times each.
 * 2. `--concurrent` VMs created at once on one node: every one must reach
 *    running with no error.
 *
 * Both use the test guest (scripts/build_guest.sh) under TCG.
 */
import { type GuestCluster, startGuestCluster } from "./lib/guest_cluster.ts";
import { percentile } from "./lib/stats.ts";
import { launchBare, quitBare } from "./lib/bare_qemu.ts";
import { DirPool } from "../host/storage/mod.ts";

function flag(name: string, def: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}

const RUNS = flag("runs", 20);
const CONCURRENT = flag("concurrent", 50);
const MEMORY = flag("memory", 128);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

/** API create → running, in ms. */
async function platformStart(g: GuestCluster, name: string): Promise<number> {
  const t0 = performance.now();
  await g.api("POST", "/api/v1/vms", { name, image: "guest", memoryMiB: MEMORY, node: "n1" });
  await waitRunning(g, name);
  return performance.now() - t0;
}

/** The same VM launched by hand with the driver's arguments, not paused: spawn → QMP running, in ms. */
async function bareStart(dir: string, i: number): Promise<number> {
  const pool = await new DirPool(`${dir}/pool`).init();
  const disk = (await pool.create(`bare${i}`, 2 ** 30)).path;
  const t0 = performance.now();
  const qmp = await launchBare(`${dir}/vms`, { name: `bare${i}`, memoryMiB: MEMORY, disk });
  while ((await qmp.execute<{ status: string }>("query-status")).status !== "running") {
    await sleep(1);
  }
  const ms = performance.now() - t0;
  await quitBare(qmp);
  return ms;
}

function summary(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: +percentile(s, 50).toFixed(1), p99: +percentile(s, 99).toFixed(1) };
}

async function measureOverhead(g: GuestCluster, work: string) {
  const platform: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    bare.push(await bareStart(work, i));
    platform.push(await platformStart(g, `ov${i}`));
    await g.api("DELETE", `/api/v1/vms/ov${i}?force=true`);
    await waitNoVms(g); // the next pair starts on a quiet host
  }
  return {
    runs: RUNS,
    platformMs: summary(platform),
    bareMs: summary(bare),
    overheadMs: summary(platform.map((p, i) => p - bare[i])),
  };
}

async function measureConcurrent(g: GuestCluster) {
  // 50 one-vCPU guests with 1 GiB thin disks on a 2-core host with a small tmpfs: allow the
  // overcommit that takes (defaults: CPU 4:1, disk 1:1, which count thin disks at full size).
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
        g.api("POST", "/api/v1/vms", { name, image: "guest", memoryMiB: MEMORY, node: "n1" })
      ),
    ),
  );
  const startErrors = rejected(await Promise.allSettled(names.map((n) => waitRunning(g, n))));
  const allRunningMs = Math.round(performance.now() - t0);
  const qemuProcesses = (await g.cluster.qemuPids("n1")).size;
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

const g = await startGuestCluster(1);
const work = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-vmbench-" });
try {
  // Warm up once (first pull of the image into the host's blob store, accelerator probe).
  await platformStart(g, "warmup");
  await g.api("DELETE", "/api/v1/vms/warmup?force=true");
  await waitNoVms(g);

  const overhead = await measureOverhead(g, work);
  console.log("start latency (ms):", JSON.stringify(overhead));
  await waitNoVms(g);
  const concurrent = await measureConcurrent(g);
  console.log("concurrent creates:", JSON.stringify(concurrent));
  const out = new URL("./results/vm.json", import.meta.url).pathname;
  await Deno.writeTextFile(
    out,
    JSON.stringify({ date: new Date().toISOString(), overhead, concurrent }, null, 2) + "\n",
  );
} finally {
  await g.stop();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
