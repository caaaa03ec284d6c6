/**
 * Scheduler benchmark.
 *
 *   deno run -A bench/scheduler_bench.ts [--hosts 1000] [--vms 10000] [--decisions 20000]
 *
 * Synthetic cluster state (hosts of mixed sizes with zone/rack/ssd labels, a
 * few cordoned, draining or offline; VMs with disks, a fifth of them in
 * placement groups), then a fixed mix of requests: plain, with label
 * constraints, and members of strict anti-affinity groups. Measures:
 *   (a) decisions/s with one index reused across decisions, as the leader
 *       does per applied state, with and without committing each decision;
 *   (b) the time to build the index;
 *   (c) decisions/s when the scores and reasons are read (`--dry-run`);
 *   (d) decisions/s of the one-shot `place()` that builds an index each time.
 * Results go to bench/results/scheduler.json. The state is seeded: runs compare.
 */
import { DEFAULT_CONFIG } from "../core/config/mod.ts";
import type { NodeRecord } from "../core/fsm/mod.ts";
import {
  type HostView,
  place,
  type PlacedVm,
  PlacementIndex,
  type PlacementRequest,
} from "../core/scheduler/mod.ts";

function flag(name: string, def: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}

const HOSTS = flag("hosts", 1000);
const VMS = flag("vms", 10000);
const DECISIONS = flag("decisions", 20000);
const GiB = 2 ** 30;
const ZONES = ["z1", "z2", "z3", "z4"];

/** mulberry32: a seeded generator keeps the synthetic cluster identical between runs. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const random = seeded(42);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];

function hostState(i: number): string {
  // 3% cordoned, 1% draining, 1% offline: enough to exercise the state filter.
  const slot = i % 100;
  return slot < 3 ? "cordoned" : slot < 4 ? "draining" : slot < 5 ? "offline" : "ready";
}

function syntheticHost(i: number): HostView {
  const name = `host${String(i).padStart(4, "0")}`;
  const node: NodeRecord = {
    name,
    url: `http://${name}:7070`,
    state: "ready",
    labels: {
      zone: ZONES[i % ZONES.length],
      rack: `r${String(Math.floor(i / 40)).padStart(2, "0")}`,
      ...(random() < 0.5 ? { ssd: "true" } : {}),
    },
    inventory: {
      cpus: pick([32, 48, 64, 96, 128]),
      memoryMiB: pick([128, 256, 384, 512]) * 1024,
      diskGiB: pick([2000, 4000, 8000]),
      diskFreeGiB: 1000,
      accel: "kvm",
      arch: "x86_64",
      kernel: "6.1",
      hostname: name,
      version: "0.1.0",
    },
    joinedAt: "",
    updatedAt: "",
  };
  const state = hostState(i);
  return { node, state, schedulable: state === "ready" };
}

interface SyntheticGroup {
  name: string;
  size: number;
}

/** VMs spread at random over ready hosts; a fifth belong to anti-affinity groups of 3 to 10. */
function syntheticVms(hosts: HostView[]): { vms: PlacedVm[]; groups: SyntheticGroup[] } {
  const ready = hosts.filter((h) => h.state === "ready").map((h) => h.node.name);
  const vms: PlacedVm[] = [];
  const groups: SyntheticGroup[] = [];
  while (vms.length < VMS) {
    const inGroup = random() < 0.2;
    const group = inGroup
      ? { name: `g${groups.length}`, size: 3 + Math.floor(random() * 8) }
      : null;
    if (group) groups.push(group);
    const members = group ? Math.min(group.size, VMS - vms.length) : 1;
    // Members of a group start on distinct hosts, as the strict rule would have put them.
    const start = Math.floor(random() * ready.length);
    for (let m = 0; m < members; m++) {
      vms.push({
        name: `vm${vms.length}`,
        node: group ? ready[(start + m * 7) % ready.length] : pick(ready),
        cpus: pick([1, 2, 4, 8]),
        memoryMiB: pick([1, 2, 4, 8, 16]) * 1024,
        desired: random() < 0.02 ? "deleted" : random() < 0.1 ? "stopped" : "running",
        disks: [{ sizeBytes: pick([10, 20, 50, 100, 200]) * GiB }],
        ...(group ? { group: group.name } : {}),
      });
    }
  }
  return { vms, groups };
}

type RequestKind = "plain" | "constraints" | "antiAffinity";

/** Half plain, a quarter with label constraints, a quarter joining a strict anti-affinity group. */
function requestMix(groups: SyntheticGroup[], count: number): [RequestKind, PlacementRequest][] {
  return Array.from({ length: count }, (_, i): [RequestKind, PlacementRequest] => {
    const base = {
      name: `new${i}`,
      cpus: pick([1, 2, 4]),
      memoryMiB: pick([1, 2, 4, 8]) * 1024,
      diskBytes: pick([10, 20, 50]) * GiB,
    };
    const slot = i % 4;
    if (slot < 2) return ["plain", base];
    if (slot === 2) {
      return ["constraints", {
        ...base,
        constraints: [
          { key: "zone", op: "=", value: pick(ZONES) },
          { key: "ssd", op: "=", value: "true" },
        ],
      }];
    }
    const group = pick(groups);
    return ["antiAffinity", {
      ...base,
      group: { name: group.name, policy: "anti-affinity", strict: true },
    }];
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

function timeBuilds(hosts: HostView[], vms: PlacedVm[], runs: number): number[] {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    new PlacementIndex(hosts, vms, DEFAULT_CONFIG);
    times.push(performance.now() - t0);
  }
  return times;
}

interface Throughput {
  decisions: number;
  placed: number;
  seconds: number;
  decisionsPerSec: number;
}

function throughput(decisions: number, placed: number, ms: number): Throughput {
  return {
    decisions,
    placed,
    seconds: round(ms / 1000, 3),
    decisionsPerSec: Math.round(decisions / (ms / 1000)),
  };
}

/** Decisions against one index; with `commit`, each success is accounted as a batch would. */
function timeIndexed(
  index: PlacementIndex,
  requests: [RequestKind, PlacementRequest][],
  decisions: number,
  commit: boolean,
): Throughput {
  let placed = 0;
  const t0 = performance.now();
  for (let i = 0; i < decisions; i++) {
    const req = requests[i % requests.length][1];
    const r = index.place(req);
    if (!r.ok) continue;
    placed++;
    if (commit) index.commit(`${req.name}-${i}`, r.node, req);
  }
  return throughput(decisions, placed, performance.now() - t0);
}

/** `vm create --dry-run`: the decision plus the scores and reasons of every host. */
function timeDryRun(
  index: PlacementIndex,
  requests: [RequestKind, PlacementRequest][],
  decisions: number,
): Throughput {
  let placed = 0;
  let listed = 0;
  const t0 = performance.now();
  for (let i = 0; i < decisions; i++) {
    const r = index.place(requests[i % requests.length][1]);
    if (r.ok) {
      placed++;
      listed += Object.keys(r.scores).length;
    }
    listed += Object.keys(r.reasons).length;
  }
  const elapsed = performance.now() - t0;
  if (listed < placed) throw new Error("dry-run listed fewer hosts than decisions");
  return throughput(decisions, placed, elapsed);
}

function timeByKind(
  index: PlacementIndex,
  requests: [RequestKind, PlacementRequest][],
  kind: RequestKind,
): Throughput {
  return timeIndexed(index, requests.filter(([k]) => k === kind), DECISIONS / 2, false);
}

function timeOneShot(
  hosts: HostView[],
  vms: PlacedVm[],
  requests: [RequestKind, PlacementRequest][],
  decisions: number,
): Throughput {
  let placed = 0;
  const t0 = performance.now();
  for (let i = 0; i < decisions; i++) {
    if (place(requests[i % requests.length][1], hosts, vms, DEFAULT_CONFIG).ok) placed++;
  }
  return throughput(decisions, placed, performance.now() - t0);
}

const hosts = Array.from({ length: HOSTS }, (_, i) => syntheticHost(i));
const { vms, groups } = syntheticVms(hosts);
const requests = requestMix(groups, 4000);

// Warm-up lets the JIT settle before anything is timed.
timeBuilds(hosts, vms, 5);
timeIndexed(new PlacementIndex(hosts, vms, DEFAULT_CONFIG), requests, 4000, false);

const buildMs = timeBuilds(hosts, vms, 20);
const reused = timeIndexed(
  new PlacementIndex(hosts, vms, DEFAULT_CONFIG),
  requests,
  DECISIONS,
  false,
);
const kinds = new PlacementIndex(hosts, vms, DEFAULT_CONFIG);
const byKind = {
  plain: timeByKind(kinds, requests, "plain"),
  constraints: timeByKind(kinds, requests, "constraints"),
  antiAffinity: timeByKind(kinds, requests, "antiAffinity"),
};
const committed = timeIndexed(
  new PlacementIndex(hosts, vms, DEFAULT_CONFIG),
  requests,
  DECISIONS,
  true,
);
const dryRun = timeDryRun(new PlacementIndex(hosts, vms, DEFAULT_CONFIG), requests, DECISIONS / 4);
const oneShot = timeOneShot(hosts, vms, requests, 50);

const results = {
  date: new Date().toISOString(),
  deno: Deno.version.deno,
  cores: navigator.hardwareConcurrency,
  state: {
    hosts: HOSTS,
    readyHosts: hosts.filter((h) => h.state === "ready").length,
    vms: vms.length,
    groups: groups.length,
  },
  mix: { plain: 0.5, constraints: 0.25, strictAntiAffinity: 0.25 },
  goalDecisionsPerSec: 10000,
  indexBuildMs: { median: round(median(buildMs), 2), max: round(Math.max(...buildMs), 2) },
  indexReused: reused,
  indexReusedByKind: byKind,
  indexReusedWithCommit: committed,
  indexReusedDryRun: dryRun,
  oneShotPlace: oneShot,
};

console.log(`state: ${HOSTS} hosts, ${vms.length} VMs, ${groups.length} groups`);
console.log(
  `index build: ${results.indexBuildMs.median} ms median (max ${results.indexBuildMs.max})`,
);
console.log(`index reused: ${reused.decisionsPerSec} decisions/s (${reused.placed} placed)`);
for (const [kind, t] of Object.entries(byKind)) {
  console.log(`  ${kind}: ${t.decisionsPerSec} decisions/s`);
}
console.log(`index reused + commit: ${committed.decisionsPerSec} decisions/s`);
console.log(`dry-run (scores and reasons read): ${dryRun.decisionsPerSec} decisions/s`);
console.log(`one-shot place(): ${oneShot.decisionsPerSec} decisions/s`);

const out = new URL("./results/scheduler.json", import.meta.url);
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(out, JSON.stringify(results, null, 2) + "\n");
console.log(`wrote ${out.pathname}`);
