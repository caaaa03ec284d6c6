/**
 * Reads the raw counters of a host and of its VMs' QEMUs, and turns two readings into a
 * sample (samples.ts). Reading is I/O (files, QMP); deriving is pure.
 */
import { type BlockStats, queryBalloonBytes, queryBlockstats } from "../kvm/commands.ts";
import type { QmpExecutor } from "../kvm/commands.ts";
import {
  guestSideOfTap,
  type HostCpuTimes,
  type LinkCounters,
  parseCounter,
  parseHostCpu,
  parseLoadavg,
  parseMeminfo,
  parseProcessCpuSeconds,
  parseVmRssBytes,
} from "./proc.ts";
import { counterRate, type HostSample, type VmSample } from "./samples.ts";

/** A file's text, or null when it cannot be read (the process exited, the tap is gone). */
export type ReadText = (path: string) => Promise<string | null>;

export const readText: ReadText = (path) => Deno.readTextFile(path).catch(() => null);

/** A running VM as the collector sees it. */
export interface VmTarget {
  name: string;
  /** QEMU's pid on this host. */
  pid: number;
  qmp: QmpExecutor;
  /** The VM's NICs that have a tap on this host (user-mode NICs have none). */
  taps: { nic: string; tap: string }[];
}

/** A VM's counters at one moment. */
export interface VmReading {
  at: number;
  pid: number;
  cpuSeconds: number;
  rssBytes: number;
  balloonBytes: number | null;
  disks: BlockStats[];
  /** From the guest's side. */
  nics: ({ nic: string } & LinkCounters)[];
}

/** Reads one VM's counters; null when its QEMU is gone. QMP failures leave disks out. */
export async function readVm(
  vm: VmTarget,
  read: ReadText = readText,
  now = Date.now,
): Promise<VmReading | null> {
  const [stat, status] = await Promise.all([
    read(`/proc/${vm.pid}/stat`),
    read(`/proc/${vm.pid}/status`),
  ]);
  const cpuSeconds = stat === null ? null : parseProcessCpuSeconds(stat);
  if (cpuSeconds === null) return null;
  const [disks, balloonBytes, nics] = await Promise.all([
    queryBlockstats(vm.qmp).catch(() => [] as BlockStats[]),
    queryBalloonBytes(vm.qmp).catch(() => null),
    Promise.all(vm.taps.map(async ({ nic, tap }) => {
      const c = await readLink(tap, read);
      return c ? { nic, ...guestSideOfTap(c) } : null;
    })),
  ]);
  return {
    at: now(),
    pid: vm.pid,
    cpuSeconds,
    rssBytes: (status === null ? null : parseVmRssBytes(status)) ?? 0,
    balloonBytes,
    disks,
    nics: nics.filter((n) => n !== null),
  };
}

/** A network device's byte counters from /sys/class/net. */
async function readLink(dev: string, read: ReadText): Promise<LinkCounters | null> {
  const dir = `/sys/class/net/${dev}/statistics`;
  const [rx, tx] = await Promise.all([read(`${dir}/rx_bytes`), read(`${dir}/tx_bytes`)]);
  const rxBytes = rx === null ? null : parseCounter(rx);
  const txBytes = tx === null ? null : parseCounter(tx);
  return rxBytes === null || txBytes === null ? null : { rxBytes, txBytes };
}

/**
 * The sample between two readings of one VM. Another pid means another QEMU (restarted):
 * its counters started from zero, so none is compared with the old process's.
 */
export function vmSample(prev: VmReading, cur: VmReading): VmSample {
  const secs = (cur.at - prev.at) / 1000;
  const same = prev.pid === cur.pid;
  const rate = (a: number | undefined, b: number) => counterRate(same ? a ?? 0 : 0, b, secs);
  const sum = <T>(items: T[], f: (x: T) => number) => items.reduce((n, x) => n + f(x), 0);
  const disk = (d: BlockStats) => prev.disks.find((p) => p.disk === d.disk);
  const nic = (n: { nic: string }) => prev.nics.find((p) => p.nic === n.nic);
  return {
    cpuPercent: 100 * rate(prev.cpuSeconds, cur.cpuSeconds),
    memoryBytes: cur.rssBytes,
    balloonBytes: cur.balloonBytes,
    diskReadBytesPerSec: sum(cur.disks, (d) => rate(disk(d)?.readBytes, d.readBytes)),
    diskWriteBytesPerSec: sum(cur.disks, (d) => rate(disk(d)?.writeBytes, d.writeBytes)),
    diskReadOpsPerSec: sum(cur.disks, (d) => rate(disk(d)?.readOps, d.readOps)),
    diskWriteOpsPerSec: sum(cur.disks, (d) => rate(disk(d)?.writeOps, d.writeOps)),
    netRxBytesPerSec: sum(cur.nics, (n) => rate(nic(n)?.rxBytes, n.rxBytes)),
    netTxBytesPerSec: sum(cur.nics, (n) => rate(nic(n)?.txBytes, n.txBytes)),
  };
}

/** Capacity and use of one storage pool on this host. */
export interface PoolReading {
  totalBytes: number;
  freeBytes: number;
  allocatedBytes: number;
}

/** The host's counters at one moment. */
export interface HostReading {
  at: number;
  cpu: HostCpuTimes;
  memoryTotalBytes: number;
  memoryAvailableBytes: number;
  load: [number, number, number];
  disk: { totalBytes: number; freeBytes: number };
  pools: Record<string, PoolReading>;
  vms: number;
}

/** What the host reading needs beyond /proc. */
export interface HostSources {
  /** The data directory's filesystem. */
  disk(): Promise<{ totalBytes: number; freeBytes: number }>;
  pools(): Promise<Record<string, PoolReading>>;
  vms(): number;
}

export async function readHost(
  src: HostSources,
  read: ReadText = readText,
  now = Date.now,
): Promise<HostReading | null> {
  const [stat, meminfo, loadavg, disk, pools] = await Promise.all([
    read("/proc/stat"),
    read("/proc/meminfo"),
    read("/proc/loadavg"),
    src.disk().catch(() => ({ totalBytes: 0, freeBytes: 0 })),
    src.pools().catch(() => ({})),
  ]);
  const cpu = stat === null ? null : parseHostCpu(stat);
  const mem = meminfo === null ? null : parseMeminfo(meminfo);
  const load = loadavg === null ? null : parseLoadavg(loadavg);
  if (!cpu || !mem || !load) return null;
  return {
    at: now(),
    cpu,
    memoryTotalBytes: mem.totalBytes,
    memoryAvailableBytes: mem.availableBytes,
    load,
    disk,
    pools,
    vms: src.vms(),
  };
}

export function hostSample(prev: HostReading, cur: HostReading): HostSample {
  const total = cur.cpu.totalSeconds - prev.cpu.totalSeconds;
  const idle = cur.cpu.idleSeconds - prev.cpu.idleSeconds;
  return {
    cpuPercent: total > 0 ? Math.min(100, Math.max(0, (100 * (total - idle)) / total)) : 0,
    memoryUsedBytes: cur.memoryTotalBytes - cur.memoryAvailableBytes,
    memoryTotalBytes: cur.memoryTotalBytes,
    diskUsedBytes: cur.disk.totalBytes - cur.disk.freeBytes,
    diskTotalBytes: cur.disk.totalBytes,
    poolAllocatedBytes: Object.values(cur.pools).reduce((n, p) => n + p.allocatedBytes, 0),
    load1: cur.load[0],
    vms: cur.vms,
  };
}
