/**
 * The host's sampling loop: every interval (10 s) it reads the host and each running VM,
 * derives a sample from the previous reading, records it in the history and updates the
 * Prometheus series. A VM that is no longer running here has its series removed and its
 * history's open 5-minute interval written.
 */
import { log } from "../../core/log/mod.ts";
import {
  hostSample,
  type HostSources,
  readHost,
  type ReadText,
  readText,
  readVm,
  type VmReading,
  vmSample,
  type VmTarget,
} from "./collector.ts";
import { FINE, type MetricsHistory, type Point } from "./history.ts";
import { exportHost, exportVm, unexportVm } from "./prometheus.ts";
import type { HistoryWindow } from "./query.ts";
import { HOST_FIELDS, type HostSample, VM_FIELDS, type VmSample } from "./samples.ts";

/** The interval; tests may sample faster (NOVACTL_METRICS_INTERVAL_MS). */
export const DEFAULT_INTERVAL_MS = FINE.stepMs;

/** How often rows older than each ring's span are deleted. */
const PRUNE_EVERY_MS = 5 * 60_000;

/** The newest sample of a VM or of the host, with its time (ms). */
export interface Latest<T> {
  t: number;
  sample: T;
}

export const HOST_SERIES = "host";
export const vmSeries = (name: string) => `vm:${name}`;

export class MetricsSampler {
  readonly #history: MetricsHistory;
  readonly #vms: () => VmTarget[];
  readonly #host: HostSources;
  readonly #read: ReadText;
  readonly #now: () => number;
  readonly intervalMs: number;
  readonly #readings = new Map<string, VmReading>();
  readonly #latest = new Map<string, Latest<VmSample>>();
  #hostReading: Awaited<ReturnType<typeof readHost>> = null;
  #hostLatest: Latest<HostSample> | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #running: Promise<void> | null = null;
  #prunedAt = 0;
  #stopped = false;

  constructor(opts: {
    history: MetricsHistory;
    /** The VMs running on this host now. */
    vms: () => VmTarget[];
    host: HostSources;
    intervalMs?: number;
    read?: ReadText;
    now?: () => number;
  }) {
    this.#history = opts.history;
    this.#vms = opts.vms;
    this.#host = opts.host;
    this.intervalMs = opts.intervalMs ?? DEFAULT_INTERVAL_MS;
    this.#read = opts.read ?? readText;
    this.#now = opts.now ?? Date.now;
  }

  /** Samples now and then every interval, until stop(). */
  start(): void {
    const loop = async () => {
      this.#running = this.sampleOnce().catch((err) =>
        log.warn("metrics sample failed", { error: String(err) })
      );
      await this.#running;
      if (!this.#stopped) this.#timer = setTimeout(loop, this.intervalMs);
    };
    void loop();
  }

  /** Stops sampling and closes the history. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#running;
    this.#history.close();
  }

  /** One round: the host, then every VM (in parallel), then those gone. */
  async sampleOnce(): Promise<void> {
    const targets = this.#vms();
    await Promise.all([this.#sampleHost(), ...targets.map((vm) => this.#sampleVm(vm))]);
    const here = new Set(targets.map((t) => t.name));
    for (const name of [...this.#readings.keys()]) if (!here.has(name)) this.#forget(name);
    const now = this.#now();
    if (now - this.#prunedAt >= PRUNE_EVERY_MS) {
      this.#history.prune(now);
      this.#prunedAt = now;
    }
  }

  /** The newest sample of a VM running here; null before its second reading. */
  latestVm(name: string): Latest<VmSample> | null {
    return this.#latest.get(name) ?? null;
  }

  latestHost(): Latest<HostSample> | null {
    return this.#hostLatest;
  }

  /** Names of the VMs sampled here now. */
  vmNames(): string[] {
    return [...this.#latest.keys()];
  }

  vmHistory(name: string, w: HistoryWindow): Point[] {
    return this.#history.query(vmSeries(name), w, VM_FIELDS);
  }

  hostHistory(w: HistoryWindow): Point[] {
    return this.#history.query(HOST_SERIES, w, HOST_FIELDS);
  }

  async #sampleVm(vm: VmTarget): Promise<void> {
    const cur = await readVm(vm, this.#read, this.#now);
    if (!cur) return this.#forget(vm.name);
    const prev = this.#readings.get(vm.name);
    this.#readings.set(vm.name, cur);
    const sample = prev ? vmSample(prev, cur) : null;
    exportVm(vm.name, prev, cur, sample);
    if (!sample) return;
    this.#latest.set(vm.name, { t: cur.at, sample });
    this.#history.record(vmSeries(vm.name), cur.at, { ...sample }, VM_FIELDS);
  }

  async #sampleHost(): Promise<void> {
    const cur = await readHost(this.#host, this.#read, this.#now);
    if (!cur) return;
    const prev = this.#hostReading;
    this.#hostReading = cur;
    const sample = prev ? hostSample(prev, cur) : null;
    exportHost(cur, sample);
    if (!sample) return;
    this.#hostLatest = { t: cur.at, sample };
    this.#history.record(HOST_SERIES, cur.at, { ...sample }, HOST_FIELDS);
  }

  #forget(name: string): void {
    this.#readings.delete(name);
    this.#latest.delete(name);
    unexportVm(name);
    this.#history.endSeries(vmSeries(name));
  }
}
