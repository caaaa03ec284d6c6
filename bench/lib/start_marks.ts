/**
 * Where a VM start's time goes, seen from outside whoever starts it, at points
 * a VM manager and an anchor started by hand share: the clock's start, QEMU up
 * (its QMP socket created), the guest's virtual CPU first running, its first
 * DHCPDISCOVER and OVN's DHCPACK on its tap (./dhcp_watch.ts). The spans
 * between them split the end-to-end time so that the guest's own boot, which
 * varies by hundreds of milliseconds under TCG on a busy host, stays in one span
 * (`boot`) and the others can be compared pair by pair.
 *
 * @module
 */
import { epochNowMs } from "./dhcp_watch.ts";

/** One VM start's marks, epoch ms. */
export interface StartMarks {
  /** The clock started: before `POST /api/v1/vms`, or before the anchor's first step. */
  start: number;
  /** QEMU's QMP socket created (its mtime): QEMU runs and has parsed its arguments. */
  qemuUp: number;
  /** The guest's virtual CPU first ran (its QEMU thread's CPU time, polled): firmware starts. */
  running: number;
  /** The guest's first DHCPDISCOVER on its tap (tcpdump's capture time). */
  discover: number;
  /** OVN's DHCPACK on its tap (tcpdump's capture time). */
  ack: number;
}

/** The spans between consecutive marks, in order; they add up to `start → ack`. */
export const SPANS = ["control", "launch", "boot", "dhcp"] as const;
export type Span = typeof SPANS[number];

const ORDER: (keyof StartMarks)[] = ["start", "qemuUp", "running", "discover", "ack"];

/**
 * The spans of one start, ms. Marks out of order mean a mark caught something else (a
 * stale socket, an earlier guest's packet): that throws rather than giving a negative span.
 */
export function spansOf(m: StartMarks): Record<Span, number> {
  for (let i = 1; i < ORDER.length; i++) {
    if (!(m[ORDER[i]] >= m[ORDER[i - 1]])) {
      throw new RangeError(
        `marks out of order: ${ORDER[i]} (${m[ORDER[i]]}) before ${ORDER[i - 1]} (${
          m[ORDER[i - 1]]
        })`,
      );
    }
  }
  return {
    control: m.qemuUp - m.start,
    launch: m.running - m.qemuUp,
    boot: m.discover - m.running,
    dhcp: m.ack - m.discover,
  };
}

/** Every span's values, and `total` (start → ack), of a run of starts. */
export function spanValues(marks: StartMarks[]): Record<Span | "total", number[]> {
  const out = { total: [] } as unknown as Record<Span | "total", number[]>;
  for (const s of SPANS) out[s] = [];
  for (const m of marks) {
    const s = spansOf(m);
    for (const k of SPANS) out[k].push(s[k]);
    out.total.push(m.ack - m.start);
  }
  return out;
}

/** Per pair, `a`'s span minus `b`'s, for every span and the total. */
export function pairDiffs(a: StartMarks[], b: StartMarks[]): Record<Span | "total", number[]> {
  if (a.length !== b.length) throw new RangeError(`${a.length} starts against ${b.length}`);
  const va = spanValues(a);
  const vb = spanValues(b);
  const out = {} as Record<Span | "total", number[]>;
  for (const k of [...SPANS, "total"] as const) out[k] = va[k].map((v, i) => v - vb[k][i]);
  return out;
}

/** When the file at `path` was last modified (a socket's: when it was bound), epoch ms. */
export async function modifiedAtMs(path: string): Promise<number> {
  const mtime = (await Deno.stat(path)).mtime;
  if (!mtime) throw new Error(`${path} has no modification time`);
  return mtime.getTime();
}

/** CPU time so far of the virtual CPU threads (`CPU n/TCG`, `CPU n/KVM`) of QEMU `pid`, ns. */
export async function vcpuTimeNs(pid: number, proc = "/proc"): Promise<number> {
  let ns = 0;
  for await (const task of Deno.readDir(`${proc}/${pid}/task`)) {
    const dir = `${proc}/${pid}/task/${task.name}`;
    // A thread may end between the listing and the read.
    const comm = await Deno.readTextFile(`${dir}/comm`).catch(() => "");
    if (!/^CPU \d+\//.test(comm)) continue;
    const stat = await Deno.readTextFile(`${dir}/schedstat`).catch(() => "0");
    ns += Number(stat.split(" ")[0]);
  }
  return ns;
}

/**
 * When virtual CPUs seen at `nowMs` with `vcpuNs` of CPU time, and idle at the poll at
 * `previousMs`, started: `nowMs` less that CPU time (they ran at most all along), not before
 * `previousMs`.
 */
export function startedAt(previousMs: number, nowMs: number, vcpuNs: number): number {
  return Math.max(previousMs, nowMs - vcpuNs / 1e6);
}

/**
 * Polls the QEMU whose pidfile is `pidfile` (it needs `-name ...,debug-threads=on` to name its
 * threads) every `everyMs` until its virtual CPUs used `thresholdNs` of CPU, and resolves with
 * when they started (epoch ms): that moment less the CPU time they used, but not before the
 * previous poll. A QEMU started paused (`-S`) has them idle until `cont`. The pidfile may not
 * exist yet when the watch starts.
 */
export function vcpuStart(
  pidfile: string,
  opts: { everyMs?: number; timeoutMs?: number; thresholdNs?: number; proc?: string } = {},
): { at: Promise<number>; stop: () => void } {
  const everyMs = opts.everyMs ?? 5;
  // A QEMU 10 paused at start (-S) had used 0.24-0.35 ms on its vCPU thread (its set-up)
  // after 1.5 s: 1 ms is the guest running, not the thread starting.
  const threshold = opts.thresholdNs ?? 1_000_000;
  const deadline = performance.now() + (opts.timeoutMs ?? 60_000);
  let stopped = false;
  const at = (async () => {
    let previous = epochNowMs();
    for (;;) {
      if (stopped) throw new Error(`watch of ${pidfile} stopped`);
      const pid = await Deno.readTextFile(pidfile).then((t) => Number(t.trim()), () => 0);
      const ns = pid > 0 ? await vcpuTimeNs(pid, opts.proc).catch(() => 0) : 0;
      const now = epochNowMs();
      if (ns >= threshold) return startedAt(previous, now, ns);
      if (performance.now() > deadline) throw new Error(`no virtual CPU ran (${pidfile})`);
      previous = now;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  at.catch(() => {}); // the caller awaits it or stops the watch
  return { at, stop: () => void (stopped = true) };
}
