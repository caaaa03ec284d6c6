/**
 * What one sample holds, for a VM and for the host, and how samples are combined: counters
 * (CPU seconds, bytes, operations) become rates between two readings; a coarser point is the
 * average of the rates and the last of the gauges in it.
 */

/** How a field combines over time: rates average, gauges keep their last value. */
export type FieldKind = "rate" | "gauge";

/** One VM on its host at one moment. Rates are per second over the interval before `t`. */
export interface VmSample {
  /** CPU time QEMU used (every thread), in percent of one host CPU. */
  cpuPercent: number;
  /** QEMU's resident set. */
  memoryBytes: number;
  /** The guest's memory as its balloon sets it; null without a balloon device. */
  balloonBytes: number | null;
  diskReadBytesPerSec: number;
  diskWriteBytesPerSec: number;
  diskReadOpsPerSec: number;
  diskWriteOpsPerSec: number;
  /** What the guest received on its NICs with taps (user-mode NICs have no counters). */
  netRxBytesPerSec: number;
  netTxBytesPerSec: number;
}

export const VM_FIELDS: Record<keyof VmSample, FieldKind> = {
  cpuPercent: "rate",
  memoryBytes: "gauge",
  balloonBytes: "gauge",
  diskReadBytesPerSec: "rate",
  diskWriteBytesPerSec: "rate",
  diskReadOpsPerSec: "rate",
  diskWriteOpsPerSec: "rate",
  netRxBytesPerSec: "rate",
  netTxBytesPerSec: "rate",
};

/** The host at one moment. */
export interface HostSample {
  /** Busy time of all CPUs together, in percent of all of them. */
  cpuPercent: number;
  memoryUsedBytes: number;
  memoryTotalBytes: number;
  /** The filesystem of the node's data directory. */
  diskUsedBytes: number;
  diskTotalBytes: number;
  /** Allocated bytes of the volumes in every storage pool on this host. */
  poolAllocatedBytes: number;
  load1: number;
  /** QEMUs this host runs. */
  vms: number;
}

export const HOST_FIELDS: Record<keyof HostSample, FieldKind> = {
  cpuPercent: "rate",
  memoryUsedBytes: "gauge",
  memoryTotalBytes: "gauge",
  diskUsedBytes: "gauge",
  diskTotalBytes: "gauge",
  poolAllocatedBytes: "gauge",
  load1: "gauge",
  vms: "gauge",
};

/** A sample as stored: numbers (or null) by field name. */
export type Fields = Record<string, number | null>;

/**
 * The rate of a counter between two readings `seconds` apart. A counter that went down was
 * reset (QEMU restarted, a tap was made again): it counted from zero since, so the reading
 * itself is what happened in the interval, at most. Never negative.
 */
export function counterRate(prev: number, cur: number, seconds: number): number {
  if (!(seconds > 0)) return 0;
  const delta = cur >= prev ? cur - prev : cur;
  return delta / seconds;
}

/**
 * Combines consecutive samples (oldest first) into one: the average of each rate and the
 * last non-null value of each gauge.
 */
export function combine(samples: Fields[], kinds: Record<string, FieldKind>): Fields {
  const out: Fields = {};
  for (const [field, kind] of Object.entries(kinds)) {
    const values = samples.map((s) => s[field]).filter((v): v is number => typeof v === "number");
    if (values.length === 0) out[field] = null;
    else if (kind === "rate") out[field] = values.reduce((a, b) => a + b, 0) / values.length;
    else out[field] = values[values.length - 1];
  }
  return out;
}
