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
import { NovactlCluster } from "./lib/novactl_cluster.ts";
import { testGuest } from "./lib/guest.ts";
import { percentile } from "./lib/stats.ts";
import { QemuDriver, QmpClient } from "../host/kvm/mod.ts";
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

class Api {
  constructor(readonly url: string, readonly token: string) {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json)}`);
    return json as T;
  }

  /** Server-side long-poll: the node answers when the state is applied (no polling load on it). */
  async waitRunning(name: string): Promise<void> {
    for (;;) {
      const vm = await this.call<VmView>(
        "GET",
        `/api/v1/vms/${name}/wait?state=running&timeoutMs=60000`,
      );
      if (vm.state === "running") return;
      if (vm.state === "failed") throw new Error(`${name} failed: ${vm.reason}`);
    }
  }

  async waitNoVms(): Promise<void> {
    while ((await this.call<{ vms: unknown[] }>("GET", "/api/v1/vms")).vms.length) await sleep(100);
  }
}

/** API create → running, in ms. */
async function platformStart(api: Api, name: string): Promise<number> {
  const t0 = performance.now();
  await api.call("POST", "/api/v1/vms", { name, image: "guest", memoryMiB: MEMORY, node: "n1" });
  await api.waitRunning(name);
  return performance.now() - t0;
}

/** The same VM launched by hand with the driver's arguments, not paused: spawn → QMP running, in ms. */
async function bareStart(dir: string, i: number): Promise<number> {
  const guest = await testGuest();
  const driver = new QemuDriver(`${dir}/vms`);
  const pool = await new DirPool(`${dir}/pool`).init();
  const disk = await pool.create(`bare${i}`, 2 ** 30);
  const spec = {
    name: `bare${i}`,
    uuid: crypto.randomUUID(),
    cpus: 1,
    memoryMiB: MEMORY,
    accel: "tcg" as const,
    kernel: { path: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
    disks: [{ id: "root", path: disk.path, format: "qcow2" as const }],
    nics: [{ id: "net0", mac: "52:54:00:00:00:01" }],
    generation: 0,
  };
  const p = driver.paths(spec.name);
  await Deno.mkdir(p.dir, { recursive: true });
  const args = driver.args(spec, p).filter((a) => a !== "-S");
  const t0 = performance.now();
  const out = await new Deno.Command("qemu-system-x86_64", {
    args,
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  const qmp = await QmpClient.connect(p.qmp, { timeoutMs: 10_000 });
  while ((await qmp.execute<{ status: string }>("query-status")).status !== "running") {
    await sleep(1);
  }
  const ms = performance.now() - t0;
  await qmp.execute("quit").catch(() => {});
  qmp.close();
  return ms;
}

function summary(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: +percentile(s, 50).toFixed(1), p99: +percentile(s, 99).toFixed(1) };
}

async function measureOverhead(api: Api, work: string) {
  const platform: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    bare.push(await bareStart(work, i));
    platform.push(await platformStart(api, `ov${i}`));
    await api.call("DELETE", `/api/v1/vms/ov${i}?force=true`);
    await api.waitNoVms(); // the next pair starts on a quiet host
  }
  return {
    runs: RUNS,
    platformMs: summary(platform),
    bareMs: summary(bare),
    overheadMs: summary(platform.map((p, i) => p - bare[i])),
  };
}

async function measureConcurrent(api: Api, cluster: NovactlCluster) {
  // 50 one-vCPU guests on a 2-core host: allow the CPU overcommit that takes (the default is 4:1).
  await api.call("PATCH", "/api/v1/config", { "scheduler.overcommit.cpu": 32 });
  const t0 = performance.now();
  const rejected = (rs: PromiseSettledResult<unknown>[]) =>
    rs.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) =>
      String(r.reason)
    );
  const names = Array.from({ length: CONCURRENT }, (_, i) => `burst${i}`);
  const createErrors = rejected(
    await Promise.allSettled(
      names.map((name) =>
        api.call("POST", "/api/v1/vms", { name, image: "guest", memoryMiB: MEMORY, node: "n1" })
      ),
    ),
  );
  const startErrors = rejected(await Promise.allSettled(names.map((n) => api.waitRunning(n))));
  const allRunningMs = Math.round(performance.now() - t0);
  const qemuProcesses = (await cluster.qemuPids("n1")).size;
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

const guest = await testGuest();
const cluster = new NovactlCluster({ env: { NOVACTL_ACCEL: "tcg" } });
const work = await Deno.makeTempDir({ prefix: "novactl-vmbench-" });
try {
  await cluster.start(1);
  const [n1] = cluster.nodes;
  const api = new Api(n1.url, cluster.adminToken);
  await cluster.cli([
    "image",
    "import",
    "guest",
    "--kernel",
    guest.kernel,
    "--initrd",
    guest.initrd,
    "--cmdline",
    guest.cmdline,
    "--server",
    n1.url,
    "--token",
    cluster.adminToken,
  ]);
  // Warm up once (first pull of the image into the host's blob store, accelerator probe).
  await platformStart(api, "warmup");
  await api.call("DELETE", "/api/v1/vms/warmup?force=true");
  await api.waitNoVms();

  const overhead = await measureOverhead(api, work);
  console.log("start latency (ms):", JSON.stringify(overhead));
  await api.waitNoVms();
  const concurrent = await measureConcurrent(api, cluster);
  console.log("concurrent creates:", JSON.stringify(concurrent));
  const out = new URL("./results/vm.json", import.meta.url).pathname;
  await Deno.writeTextFile(
    out,
    JSON.stringify({ date: new Date().toISOString(), overhead, concurrent }, null, 2) + "\n",
  );
} finally {
  await cluster.stop();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
