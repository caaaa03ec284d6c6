/**
 * Pure parsers of the kernel's text files the collector reads (/proc, /sys). Each takes the
 * file's text and returns numbers, so they are tested with fixtures and never touch the host.
 */

/**
 * Clock ticks per second of /proc times (`getconf CLK_TCK`). It is 100 on every Linux
 * architecture Deno runs on (USER_HZ is fixed by the ABI, whatever the kernel's HZ).
 */
export const CLK_TCK = 100;

/**
 * CPU seconds a process used, from `/proc/<pid>/stat`: utime + stime (fields 14 and 15). The
 * process line sums all its threads (QEMU's vCPU, I/O and main threads alike).
 *
 * @returns null when the text is not a stat line
 */
export function parseProcessCpuSeconds(stat: string): number | null {
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const end = stat.lastIndexOf(")");
  if (end < 0) return null;
  const rest = stat.slice(end + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state), so field n is rest[n - 3].
  const utime = Number(rest[14 - 3]);
  const stime = Number(rest[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return (utime + stime) / CLK_TCK;
}

/** Resident set size in bytes from `/proc/<pid>/status` (its `VmRSS:` line, in kB). */
export function parseVmRssBytes(status: string): number | null {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : null;
}

/** The host's CPU time from the `cpu` line of `/proc/stat`, in seconds summed over all CPUs. */
export interface HostCpuTimes {
  /** Every state (user … steal); guest time is already inside user and nice. */
  totalSeconds: number;
  /** Idle and iowait. */
  idleSeconds: number;
}

export function parseHostCpu(stat: string): HostCpuTimes | null {
  const line = stat.split("\n").find((l) => l.startsWith("cpu "));
  if (!line) return null;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  if (v.length < 4 || v.some((n) => !Number.isFinite(n))) return null;
  // guest and guest_nice (fields 9 and 10) are counted in user and nice already.
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = v[3] + (v[4] ?? 0);
  return { totalSeconds: total / CLK_TCK, idleSeconds: idle / CLK_TCK };
}

/** `/proc/meminfo`: total and available memory in bytes. */
export function parseMeminfo(text: string): { totalBytes: number; availableBytes: number } | null {
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : null;
  };
  const total = kb("MemTotal");
  // Kernels before 3.14 have no MemAvailable: free memory is the closest.
  const available = kb("MemAvailable") ?? kb("MemFree");
  return total === null || available === null
    ? null
    : { totalBytes: total, availableBytes: available };
}

/** `/proc/loadavg`: the 1, 5 and 15 minute load averages. */
export function parseLoadavg(text: string): [number, number, number] | null {
  const v = text.trim().split(/\s+/).slice(0, 3).map(Number);
  return v.length === 3 && v.every(Number.isFinite) ? [v[0], v[1], v[2]] : null;
}

/** Counters of a network device (`/sys/class/net/<dev>/statistics/{rx,tx}_bytes`). */
export interface LinkCounters {
  rxBytes: number;
  txBytes: number;
}

/**
 * A tap's counters seen from the guest: what the host's end of the tap transmits, the guest
 * receives, and the other way round.
 */
export function guestSideOfTap(tap: LinkCounters): LinkCounters {
  return { rxBytes: tap.txBytes, txBytes: tap.rxBytes };
}

/** Parses one counter file (a decimal number and a newline). */
export function parseCounter(text: string): number | null {
  const t = text.trim();
  return /^\d+$/.test(t) ? Number(t) : null;
}
