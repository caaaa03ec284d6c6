/**
 * The event stream under load (issue 13): Server-Sent Events fanned out to 100 subscribers
 * while VMs are created.
 *
 *   deno run -A bench/events_bench.ts [--subscribers 100] [--duration 20] [--warmup 5] [--rate 100]
 *                                     [--clients 16] [--stalled 3] [--slow 2] [--out FILE]
 *
 * A real 3-node cluster (HTTPS, signed peer requests) whose hosts are simulated
 * (`--simulated-host`: real nodes, Raft, leases and reports; creates with `start: false` need
 * no QEMU). `events.keepCount` is raised to 1,000,000 so that no event of the run leaves the
 * log while a subscriber may still want it (the check below then demands every one).
 *
 * - Subscribers: `--subscribers` streaming clients, `GET /api/v1/events` spread round-robin
 *   over the 3 nodes (the 2 followers included), each its own HTTP client and connection
 *   reading the body as it comes and parsing SSE (core/events/sse.ts); even ones ask for
 *   `type=vm`, odd ones for every event (admin token: audit included). All resume after the
 *   same id, the newest event before they connect (`since=`), so each must receive exactly
 *   the same events as the others with its filter.
 * - Load: `--clients` API clients create stopped VMs through the leader, paced together to
 *   `--rate` creates/s (each client sends its next create at its next slot, or at once when
 *   behind), for `--duration` seconds per phase.
 * - Warm-up: `--warmup` seconds of the same load, not measured (the first seconds of 100 new
 *   streams and of the load pay for compilation and connection set-up: a first run without
 *   it had a phase-1 p99 of 1.3 s against 0.19 s in phase 2).
 * - Phase 1, "without slow readers": the load with the 100 subscribers.
 * - Phase 2, "with slow readers": the same again after `--stalled` clients that send the
 *   request over their own TLS connection and never read a byte, and `--slow` clients that
 *   read one chunk per second, joined (spread over the nodes, resuming from the same id, so
 *   they are thousands of events behind from their first moment). The goal "no subscriber
 *   blocks the node" holds when phase 2's delivery latency of the fast subscribers, creates/s
 *   and create latency match phase 1's, and every node's resident set (VmRSS from
 *   /proc/PID/status, sampled every 500 ms) stays bounded.
 *
 * Delivery latency. The commit of a create happens inside the leader before it answers; no
 * client can see that instant. The bench takes, for each created VM, `t0` = the moment the
 * create's response (its headers) reached the client: the write was committed by then. The
 * latency of a delivery is the subscriber's receipt of the VM's `vm.created` event minus
 * `t0` (`delivery after response ms`). It can be negative: a follower may apply and stream
 * the event before the leader's answer has reached the client; it is reported as it is.
 * Since `t0` comes after the commit, this figure can under-state the delay by up to the
 * time the answer takes to come back; `delivery after send ms` (receipt minus the moment the
 * create was sent) is an upper bound that holds the whole create in it. Both clocks are this
 * process's `performance.now()`. The subscribers, load generator and 3 nodes share the
 * machine; the bench's own CPU per phase is recorded, since a busy bench process reads late.
 *
 * Exactly once. After the run (and once every fast subscriber has every `vm.created` of the
 * run, or 30 s), the leader's log after the start id is read (`follow=false`) as the
 * reference; for each fast subscriber, every reference event matching its filter up to the
 * reference's last id must have arrived once, in order: missing, duplicated, unexpected
 * and out-of-order ids are counted and printed. Creates answered 2xx must each have a
 * `vm.created` in the reference.
 *
 * Goals (issue 13): delivery p99 ≤ 100 ms after commit, and no subscriber blocking the node.
 *
 * @module
 */
import { readSse } from "../core/events/sse.ts";
import { type Figure, figure } from "./lib/figures.ts";
import { nonNegativeNumber, parseFlags, positiveNumber, toPositiveInt } from "./lib/flags.ts";
import { NovactlCluster } from "./lib/novactl_cluster.ts";
import { runMeta } from "./lib/run_meta.ts";
import { importTinyKernel, simulatedHostArgs } from "./lib/simulated.ts";
import { defaultOut, installSignalTeardown, writeResult } from "./lib/systems.ts";
import { requestJson, sleep } from "./lib/util.ts";

const SIMULATED = simulatedHostArgs(16_384, 16 << 20);
const IMAGE = "k";
const RSS_SAMPLE_MS = 500;
const DRAIN_TIMEOUT_MS = 30_000;
/** After the slow readers joined, before phase 2: their buffers fill with their backlog. */
const SLOW_SETTLE_MS = 3_000;
const PAUSE_BETWEEN_PHASES_MS = 2_000;

interface Options {
  subscribers: number;
  durationS: number;
  warmupS: number;
  rate: number;
  clients: number;
  stalled: number;
  slow: number;
  out: string;
}

function parseOptions(args: string[]): Options {
  const flags = parseFlags(args, new Set());
  const count = (name: string, fallback: number) => {
    const v = Number(flags.get(name) ?? fallback);
    if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} must be an integer ≥ 0`);
    return v;
  };
  return {
    subscribers: toPositiveInt("subscribers", flags.get("subscribers") ?? "100"),
    durationS: positiveNumber(flags, "duration", 20),
    warmupS: nonNegativeNumber(flags, "warmup", 5),
    rate: positiveNumber(flags, "rate", 100),
    clients: toPositiveInt("clients", flags.get("clients") ?? "16"),
    stalled: count("stalled", 3),
    slow: count("slow", 2),
    out: flags.get("out") ?? defaultOut("events"),
  };
}

// ---------------------------------------------------------------- pure helpers (tested)

/** `<raftIndex>-<n>` as a pair, or null. */
export function parseId(id: string): [number, number] | null {
  const m = /^(\d+)-(\d+)$/.exec(id);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** Event-id order: negative when `a` comes first. */
export function compareIds(a: string, b: string): number {
  const x = parseId(a)!;
  const y = parseId(b)!;
  return x[0] - y[0] || x[1] - y[1];
}

/** How one subscriber's received ids compare with the reference it should have got. */
export interface DeliveryCheck {
  expected: number;
  delivered: number;
  missing: string[];
  duplicates: string[];
  unexpected: string[];
  outOfOrder: number;
}

/**
 * Compares `received` (ids in arrival order) with `reference` (the ids the subscriber's
 * filter matches, in log order); ids after the reference's last one are not judged (events
 * that came after the reference was read).
 */
export function checkDelivery(reference: string[], received: string[]): DeliveryCheck {
  const last = reference.at(-1);
  const judged = last === undefined ? [] : received.filter((id) => compareIds(id, last) <= 0);
  const want = new Set(reference);
  const seen = new Set<string>();
  const duplicates: string[] = [];
  const unexpected: string[] = [];
  let outOfOrder = 0;
  for (let i = 0; i < judged.length; i++) {
    const id = judged[i];
    if (seen.has(id)) duplicates.push(id);
    seen.add(id);
    if (!want.has(id)) unexpected.push(id);
    if (i > 0 && compareIds(judged[i - 1], id) >= 0) outOfOrder++;
  }
  const missing = reference.filter((id) => !seen.has(id));
  return {
    expected: reference.length,
    delivered: judged.length,
    missing,
    duplicates,
    unexpected,
    outOfOrder,
  };
}

/** VmRSS of a `/proc/PID/status` text, in KiB (NaN when absent). */
export function vmRssKiB(status: string): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  return m ? Number(m[1]) : NaN;
}

// ---------------------------------------------------------------- subscribers

interface Subscriber {
  index: number;
  node: string;
  filter: "vm" | "all";
  /** Ids in arrival order. */
  ids: string[];
  /** VM name → performance.now() at the receipt of its `vm.created`. */
  created: Map<string, number>;
  connected: Promise<void>;
  done: Promise<void>;
  abort: AbortController;
  client: Deno.HttpClient;
  error?: string;
}

function subscribe(
  index: number,
  node: string,
  url: string,
  token: string,
  ca: string,
  filter: "vm" | "all",
  since: string,
): Subscriber {
  const abort = new AbortController();
  const client = Deno.createHttpClient({ caCerts: [ca] });
  const sub = { index, node, filter, ids: [], created: new Map(), abort, client } as
    & Omit<Subscriber, "connected" | "done">
    & Partial<Subscriber>;
  let connected!: () => void;
  let failed!: (e: unknown) => void;
  sub.connected = new Promise<void>((resolve, reject) => {
    connected = resolve;
    failed = reject;
  });
  const query = `since=${since}${filter === "vm" ? "&type=vm" : ""}`;
  sub.done = (async () => {
    try {
      const res = await fetch(`${url}/api/v1/events?${query}`, {
        headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
        signal: abort.signal,
        client,
      });
      if (res.status !== 200 || !res.body) throw new Error(`HTTP ${res.status}`);
      connected();
      for await (const msg of readSse(res.body)) {
        const now = performance.now();
        if (msg.comment !== undefined || msg.id === undefined) continue;
        sub.ids!.push(msg.id);
        if (msg.data.includes('"vm.created"')) {
          const event = JSON.parse(msg.data) as { action: string; resource: string };
          if (event.action === "vm.created") sub.created!.set(event.resource, now);
        }
      }
      if (!abort.signal.aborted) sub.error = "the stream ended";
    } catch (error) {
      if (!abort.signal.aborted) sub.error = String(error);
      failed(error);
    }
  })();
  sub.connected.catch(() => {});
  return sub as Subscriber;
}

/** A client that sends its request over its own TLS connection and never reads a byte. */
async function stalledReader(url: string, token: string, ca: string, since: string) {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connectTls({ hostname, port: Number(port), caCerts: [ca] });
  await conn.handshake();
  const request = `GET /api/v1/events?since=${since} HTTP/1.1\r\nhost: ${hostname}:${port}\r\n` +
    `authorization: Bearer ${token}\r\naccept: text/event-stream\r\n\r\n`;
  await conn.write(new TextEncoder().encode(request));
  return { close: () => conn.close() };
}

/** A client that reads one chunk per second. */
function slowReader(url: string, token: string, ca: string, since: string) {
  const abort = new AbortController();
  const client = Deno.createHttpClient({ caCerts: [ca] });
  let bytes = 0;
  const done = (async () => {
    try {
      const res = await fetch(`${url}/api/v1/events?since=${since}`, {
        headers: { authorization: `Bearer ${token}` },
        signal: abort.signal,
        client,
      });
      const reader = res.body!.getReader();
      while (!abort.signal.aborted) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.byteLength;
        await sleep(1_000);
      }
    } catch {
      // aborted at the end
    }
  })();
  return {
    get bytes() {
      return bytes;
    },
    close: async () => {
      abort.abort();
      await done;
      client.close();
    },
  };
}

// ---------------------------------------------------------------- load

interface CreateSample {
  name: string;
  sentAt: number;
  answeredAt: number;
  status: number;
}

async function createLoad(
  leader: string,
  token: string,
  ca: string,
  options: Options,
  prefix: string,
  durationS = options.durationS,
): Promise<{ samples: CreateSample[]; seconds: number }> {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  const samples: CreateSample[] = [];
  const start = performance.now();
  const end = start + durationS * 1000;
  const interval = 1000 / options.rate;
  try {
    await Promise.all(Array.from({ length: options.clients }, async (_, c) => {
      for (let k = 0;; k++) {
        const slot = start + (k * options.clients + c) * interval;
        if (slot >= end) break;
        const wait = slot - performance.now();
        if (wait > 0) await sleep(wait);
        const name = `${prefix}-w${c}-${k}`;
        const sentAt = performance.now();
        const res = await fetch(`${leader}/api/v1/vms`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
          body: JSON.stringify({ name, image: IMAGE, cpus: 1, memoryMiB: 16, start: false }),
          client,
          signal: AbortSignal.timeout(30_000),
        }).catch(() => null);
        const answeredAt = performance.now();
        await res?.body?.cancel();
        samples.push({ name, sentAt, answeredAt, status: res?.status ?? 0 });
      }
    }));
  } finally {
    client.close();
  }
  return { samples, seconds: (performance.now() - start) / 1000 };
}

// ---------------------------------------------------------------- measuring

async function rssMiB(pid: number): Promise<number> {
  return vmRssKiB(await Deno.readTextFile(`/proc/${pid}/status`)) / 1024;
}

/** Samples every node's RSS until stopped; the maximum per node. */
function rssSampler(pids: Map<string, number>) {
  const max = new Map<string, number>();
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const [name, pid] of pids) {
        const v = await rssMiB(pid).catch(() => NaN);
        if (Number.isFinite(v) && v > (max.get(name) ?? -Infinity)) max.set(name, v);
      }
      await sleep(RSS_SAMPLE_MS);
    }
  })();
  return async () => {
    running = false;
    await loop;
    return Object.fromEntries([...max].map(([k, v]) => [k, Math.round(v)]));
  };
}

/** This process's CPU seconds so far (user + system). */
async function selfCpuSeconds(): Promise<number> {
  const stat = await Deno.readTextFile("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface PhaseResult {
  label: string;
  deliveryAfterResponseMs: Figure;
  deliveryAfterSendMs: Figure;
  /** Delivery after response, by the node the subscriber streams from (the leader's name first). */
  byNode: Record<string, Figure | string>;
  createMs: Figure;
  createsOk: number;
  createsFailed: number;
  createsPerSec: number;
  deliveriesMeasured: number;
  deliveriesMissing: number;
  /** p99 of delivery after response in each second of the phase (an array: not rendered). */
  deliveryAfterResponseP99MsPerSecond: (number | null)[];
  nodeRssMaxMiB: Record<string, number>;
  benchCpuPctOfOneCore: number;
}

async function runPhase(
  label: string,
  prefix: string,
  leader: string,
  token: string,
  ca: string,
  options: Options,
  pids: Map<string, number>,
  subs: Subscriber[],
): Promise<
  {
    result: Omit<
      PhaseResult,
      | "deliveryAfterResponseMs"
      | "deliveryAfterSendMs"
      | "byNode"
      | "deliveriesMeasured"
      | "deliveryAfterResponseP99MsPerSecond"
      | "deliveriesMissing"
    >;
    samples: CreateSample[];
  }
> {
  console.log(
    `-- ${label}: ${options.rate} creates/s, ${options.clients} clients, ` +
      `${options.durationS} s, ${subs.length} subscribers`,
  );
  const stopRss = rssSampler(pids);
  const cpu0 = await selfCpuSeconds();
  const { samples, seconds } = await createLoad(leader, token, ca, options, prefix);
  const cpuPct = ((await selfCpuSeconds()) - cpu0) / seconds * 100;
  const nodeRssMaxMiB = await stopRss();
  const ok = samples.filter((s) => s.status >= 200 && s.status < 300);
  const result = {
    label,
    createMs: figure(ok.map((s) => s.answeredAt - s.sentAt), 2),
    createsOk: ok.length,
    createsFailed: samples.length - ok.length,
    createsPerSec: Math.round(ok.length / seconds * 10) / 10,
    nodeRssMaxMiB,
    benchCpuPctOfOneCore: Math.round(cpuPct),
  };
  console.log(
    `   ${ok.length} creates (${samples.length - ok.length} failed), ${result.createsPerSec}/s, ` +
      `create p50 ${result.createMs.median} ms p99 ${result.createMs.p99} ms; ` +
      `node RSS max ${
        JSON.stringify(nodeRssMaxMiB)
      } MiB; bench CPU ${result.benchCpuPctOfOneCore} %`,
  );
  return { result, samples: ok };
}

/** A figure of `values`, or an empty one (n 0) where nothing was measured. */
function figureOrEmpty(values: number[]): Figure {
  return values.length ? figure(values, 2) : { median: NaN, min: NaN, max: NaN, n: 0 };
}

function deliveries(samples: CreateSample[], subs: Subscriber[]) {
  const afterResponse: number[] = [];
  const afterSend: number[] = [];
  const byNode = new Map<string, number[]>();
  let missing = 0;
  for (const sub of subs) {
    if (!byNode.has(sub.node)) byNode.set(sub.node, []);
    const mine = byNode.get(sub.node)!;
    for (const s of samples) {
      const at = sub.created.get(s.name);
      if (at === undefined) {
        missing++;
        continue;
      }
      afterResponse.push(at - s.answeredAt);
      afterSend.push(at - s.sentAt);
      mine.push(at - s.answeredAt);
    }
  }
  // p99 of delivery after response per second of the phase (by the create's send time).
  const start = Math.min(...samples.map((s) => s.sentAt));
  const perSecond: number[][] = [];
  for (const sub of subs) {
    for (const s of samples) {
      const at = sub.created.get(s.name);
      if (at === undefined) continue;
      const k = Math.floor((s.sentAt - start) / 1000);
      (perSecond[k] ??= []).push(at - s.answeredAt);
    }
  }
  const p99PerSecond = Array.from(perSecond, (v) => v?.length ? figure(v, 1).p99 ?? null : null);
  return { afterResponse, afterSend, byNode, missing, p99PerSecond };
}

async function waitDrained(samples: CreateSample[], subs: Subscriber[]): Promise<boolean> {
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (subs.every((sub) => samples.every((s) => sub.created.has(s.name)))) return true;
    await sleep(200);
  }
  return false;
}

async function readReference(url: string, token: string, ca: string, since: string) {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const res = await fetch(`${url}/api/v1/events?follow=false&since=${since}`, {
      headers: { authorization: `Bearer ${token}` },
      client,
    });
    if (res.status !== 200 || !res.body) throw new Error(`reference: HTTP ${res.status}`);
    const events: { id: string; type: string; action: string; resource: string }[] = [];
    for await (const msg of readSse(res.body)) {
      if (msg.id !== undefined && msg.event === undefined) events.push(JSON.parse(msg.data));
      if (msg.event === "gap") throw new Error(`reference has a gap: ${msg.data}`);
    }
    return events;
  } finally {
    client.close();
  }
}

async function newestId(url: string, token: string, ca: string): Promise<string> {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const res = await fetch(`${url}/api/v1/events?follow=false&tail=1`, {
      headers: { authorization: `Bearer ${token}` },
      client,
    });
    let id: string | undefined;
    for await (const msg of readSse(res.body!)) if (msg.id) id = msg.id;
    if (!id) throw new Error("no event in the log to start after");
    return id;
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  installSignalTeardown();
  const cluster = new NovactlCluster({ extraNodeArgs: SIMULATED });
  const subs: Subscriber[] = [];
  const warmup: CreateSample[] = [];
  const closers: (() => unknown)[] = [];
  try {
    await cluster.start(3);
    const meta = await runMeta("events", { dataDir: cluster.baseDir, runs: 1 });
    const token = cluster.adminToken;
    const ca = await Deno.readTextFile(cluster.caFile);
    const leaderName = await cluster.leaderName();
    const leader = await cluster.leaderUrl();
    await importTinyKernel(cluster, IMAGE);
    const patch = await requestJson(`${leader}/api/v1/config`, {
      method: "PATCH",
      body: { "events.keepCount": 1_000_000 },
      token,
    });
    if (patch.status < 200 || patch.status > 299) throw new Error(`config: ${patch.status}`);
    const names = cluster.nodes.map((n) => n.name);
    const pids = new Map<string, number>();
    for (const name of names) pids.set(name, await cluster.nodePid(name));
    const rssBefore: Record<string, number> = {};
    for (const [name, pid] of pids) rssBefore[name] = Math.round(await rssMiB(pid));

    const since = await newestId(leader, token, ca);
    console.log(
      `-- ${options.subscribers} subscribers over ${names.join(", ")} ` +
        `(leader ${leaderName}), after ${since}`,
    );
    for (let i = 0; i < options.subscribers; i++) {
      const node = cluster.nodes[i % cluster.nodes.length];
      subs.push(subscribe(i, node.name, node.url, token, ca, i % 2 ? "all" : "vm", since));
    }
    await Promise.all(subs.map((s) => s.connected));
    await sleep(1_000);
    if (options.warmupS > 0) {
      // Warm-up, not measured (its events are checked below like all others): the first
      // seconds of 100 new streams and of the load pay for compilation and connection set-up.
      console.log(`-- warm-up: ${options.warmupS} s of creates, not measured`);
      const w = await createLoad(leader, token, ca, options, "w", options.warmupS);
      warmup.push(...w.samples.filter((s) => s.status >= 200 && s.status < 300));
      await sleep(PAUSE_BETWEEN_PHASES_MS);
    }

    const p1 = await runPhase("without slow readers", "a", leader, token, ca, options, pids, subs);
    await sleep(PAUSE_BETWEEN_PHASES_MS);

    console.log(`-- ${options.stalled} stalled and ${options.slow} slow readers join`);
    const slow: ReturnType<typeof slowReader>[] = [];
    for (let i = 0; i < options.stalled + options.slow; i++) {
      const node = cluster.nodes[i % cluster.nodes.length];
      if (i < options.stalled) {
        const r = await stalledReader(node.url, token, ca, since);
        closers.push(r.close);
      } else {
        const r = slowReader(node.url, token, ca, since);
        slow.push(r);
        closers.push(r.close);
      }
    }
    await sleep(SLOW_SETTLE_MS);
    const p2 = await runPhase("with slow readers", "b", leader, token, ca, options, pids, subs);

    const all = [...warmup, ...p1.samples, ...p2.samples];
    const drained = await waitDrained(all, subs);
    console.log(drained ? "   every subscriber has every vm.created" : "   NOT DRAINED in 30 s");
    const phases = [p1, p2].map((p) => {
      const d = deliveries(p.samples, subs);
      const r: PhaseResult = {
        ...p.result,
        deliveryAfterResponseMs: figureOrEmpty(d.afterResponse),
        deliveryAfterSendMs: figureOrEmpty(d.afterSend),
        byNode: {
          label: `${p.result.label}: delivery after response ms, subscribers on`,
          ...Object.fromEntries(
            [...d.byNode].filter(([, v]) => v.length).map((
              [node, v],
            ) => [node === leaderName ? `${node} (leader)` : node, figureOrEmpty(v)]),
          ),
        },
        deliveryAfterResponseP99MsPerSecond: d.p99PerSecond,
        deliveriesMeasured: d.afterResponse.length,
        deliveriesMissing: d.missing,
      };
      console.log(
        `   ${r.label}: delivery after response p50 ${r.deliveryAfterResponseMs.median} ` +
          `p99 ${r.deliveryAfterResponseMs.p99} max ${r.deliveryAfterResponseMs.max} ms; ` +
          `after send p50 ${r.deliveryAfterSendMs.median} p99 ${r.deliveryAfterSendMs.p99} ms; ` +
          `${r.deliveriesMeasured} measured, ${r.deliveriesMissing} missing`,
      );
      console.log(`     p99 per second: ${d.p99PerSecond.join(" ")}`);
      for (const [node, f] of Object.entries(r.byNode)) {
        if (typeof f !== "string") console.log(`     on ${node}: p50 ${f.median} p99 ${f.p99} ms`);
      }
      return r;
    });

    // Exactly once, against the leader's log.
    const reference = await readReference(leader, token, ca, since);
    const refIds = {
      all: reference.map((e) => e.id),
      vm: reference.filter((e) => e.type === "vm").map((e) => e.id),
    };
    const createdInLog = new Set(
      reference.filter((e) => e.action === "vm.created").map((e) => e.resource),
    );
    // A subscriber on a follower may be a moment behind the leader's log: wait (10 s at
    // most) until each has reached the last reference event its filter matches.
    const lastOf = { all: refIds.all.at(-1), vm: refIds.vm.at(-1) };
    const caughtUp = (sub: Subscriber) => {
      const want = lastOf[sub.filter];
      const got = sub.ids.at(-1);
      return want === undefined || (got !== undefined && compareIds(got, want) >= 0);
    };
    for (let t = 0; t < 50 && !subs.every(caughtUp); t++) await sleep(200);
    const streamsOpen: Record<string, number> = {};
    for (const node of cluster.nodes) {
      const text = await (await cluster.fetch(`${node.url}/metrics`)).text();
      streamsOpen[node.name] = Number(/^novactl_event_streams (\S+)$/m.exec(text)?.[1] ?? NaN);
    }
    console.log(`   open event streams per node (metrics): ${JSON.stringify(streamsOpen)}`);
    const createsWithoutEvent = all.filter((s) => !createdInLog.has(s.name)).map((s) => s.name);
    const totals = {
      expected: 0,
      delivered: 0,
      missing: 0,
      duplicates: 0,
      unexpected: 0,
      outOfOrder: 0,
    };
    const problems: string[] = [];
    for (const sub of subs) {
      const c = checkDelivery(refIds[sub.filter], sub.ids);
      totals.expected += c.expected;
      totals.delivered += c.delivered;
      totals.missing += c.missing.length;
      totals.duplicates += c.duplicates.length;
      totals.unexpected += c.unexpected.length;
      totals.outOfOrder += c.outOfOrder;
      if (
        c.missing.length || c.duplicates.length || c.unexpected.length || c.outOfOrder || sub.error
      ) {
        problems.push(
          `subscriber ${sub.index} (${sub.node}, ${sub.filter}): ${c.missing.length} missing ` +
            `[${c.missing.slice(0, 5).join(" ")}], ${c.duplicates.length} duplicated ` +
            `[${c.duplicates.slice(0, 5).join(" ")}], ${c.unexpected.length} unexpected ` +
            `[${c.unexpected.slice(0, 5).join(" ")}], ${c.outOfOrder} out of order` +
            (sub.error ? `; stream error ${sub.error}` : ""),
        );
      }
    }
    console.log(
      `-- exactly once: ${reference.length} events in the log after ${since}; ` +
        `${totals.delivered} of ${totals.expected} expected deliveries, ${totals.missing} missing, ` +
        `${totals.duplicates} duplicated, ${totals.unexpected} unexpected, ` +
        `${totals.outOfOrder} out of order; ${createsWithoutEvent.length} creates without vm.created`,
    );
    for (const p of problems.slice(0, 20)) console.log(`   ${p}`);

    const rssEnd: Record<string, number> = {};
    for (const [name, pid] of pids) rssEnd[name] = Math.round(await rssMiB(pid));
    const slowBytes = slow.map((r) => r.bytes);
    console.log(
      `   RSS before ${JSON.stringify(rssBefore)}, at the end ${JSON.stringify(rssEnd)} MiB`,
    );
    await writeResult(options.out, {
      meta: { ...meta, date: new Date().toISOString() },
      setup: {
        nodes: 3,
        leader: leaderName,
        subscribers: options.subscribers,
        subscribersTypeVm: subs.filter((s) => s.filter === "vm").length,
        durationSPerPhase: options.durationS,
        warmupS: options.warmupS,
        rateCreatesPerSec: options.rate,
        createClients: options.clients,
        stalledReaders: options.stalled,
        slowReaders: options.slow,
      },
      phases: { withoutSlowReaders: phases[0], withSlowReaders: phases[1] },
      exactlyOnce: {
        eventsInLog: reference.length,
        ...totals,
        createsWithoutEvent: createsWithoutEvent.length,
        subscriberErrors: subs.filter((s) => s.error).length,
        drained,
        problems: problems.slice(0, 20),
      },
      rssMiB: { before: rssBefore, atEnd: rssEnd },
      openEventStreamsAtEnd: streamsOpen,
      slowReaderBytesRead: slowBytes,
    });
  } finally {
    // Aborted streams may end only once the nodes close them (a first run waited here until
    // its nodes were stopped by hand): a bounded wait, then the cluster stops either way.
    for (const sub of subs) sub.abort.abort();
    const settled = Promise.allSettled([
      ...subs.map((s) => s.done),
      ...closers.map(async (c) => await c()),
    ]);
    await Promise.race([settled, sleep(5_000)]);
    await cluster.stop();
    await Promise.race([settled, sleep(5_000)]);
    for (const sub of subs) sub.client.close();
  }
}

if (import.meta.main) {
  try {
    await main();
    Deno.exit(0);
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(1);
  }
}
