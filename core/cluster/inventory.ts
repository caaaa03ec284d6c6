/** What a host reports about itself when it joins and periodically after. */
import type { Inventory } from "../fsm/mod.ts";
import { VERSION } from "../version.ts";
import { INVENTORY_LIMITS } from "../fsm/command_schemas.ts";

/** An OS-supplied string as the leader accepts it: bounded, no control characters. */
function capped(text: string, max: number): string {
  return text.slice(0, max).replace(/\p{Cc}/gu, "?");
}

/** A count the OS reported, as a finite number in [0, max] (NaN from a parse failure is 0). */
function bounded(n: number, max: number): number {
  return Number.isFinite(n) ? Math.min(Math.max(n, 0), max) : 0;
}

async function diskGiB(dir: string): Promise<{ total: number; free: number }> {
  try {
    const out = await new Deno.Command("df", {
      args: ["-Pk", dir],
      stdout: "piped",
      stderr: "null",
    }).output();
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
    const cols = line.split(/\s+/);
    return {
      total: Math.round(Number(cols[1]) / 1048576),
      free: Math.round(Number(cols[3]) / 1048576),
    };
  } catch {
    return { total: 0, free: 0 };
  }
}

/**
 * KVM is reported only when a bounded probe shows it works; on nested build
 * machines /dev/kvm exists but guests hang, so presence alone proves nothing.
 * The probe is supplied by the host driver (host/kvm); without one the
 * accelerator is reported as undecided (null), never guessed.
 */
export type AccelProbe = () => Promise<"kvm" | "tcg">;

export async function collectInventory(dataDir: string, probe?: AccelProbe): Promise<Inventory> {
  const mem = Deno.systemMemoryInfo();
  const disk = await diskGiB(dataDir);
  // Bounded here as the leader will check them (core/fsm/command_schemas.ts), so an odd
  // host (a huge hostname, a df parse failure) still registers.
  return {
    cpus: Math.round(bounded(navigator.hardwareConcurrency, INVENTORY_LIMITS.cpus)),
    memoryMiB: Math.round(bounded(mem.total / 1024 / 1024, INVENTORY_LIMITS.memoryMiB)),
    diskGiB: bounded(disk.total, INVENTORY_LIMITS.diskGiB),
    diskFreeGiB: bounded(disk.free, INVENTORY_LIMITS.diskGiB),
    accel: probe ? await probe() : null,
    arch: capped(Deno.build.arch, INVENTORY_LIMITS.archChars),
    kernel: capped(Deno.osRelease(), INVENTORY_LIMITS.kernelChars),
    hostname: capped(Deno.hostname(), INVENTORY_LIMITS.hostnameChars),
    version: capped(VERSION, INVENTORY_LIMITS.versionChars),
  };
}

/** Free-space figures move all the time; a change below this share of the disk is not news. */
const SPACE_TOLERANCE = 0.01;
const GIB = 2 ** 30;

/**
 * Whether `next` differs from the inventory the cluster recorded enough to be worth a
 * replicated write. Every entry goes to every member: 200 hosts rewriting an unchanged
 * inventory each minute were 3 entries a second, each sent to 200 members, the largest
 * part of an idle leader's work. Hardware, accelerator, versions and volume counts count
 * exactly; free and allocated space only once they moved by 1 % of the disk (at least
 * 1 GiB) from the recorded figure, so a slow drift is reported once it adds up. Host
 * liveness is the lease's business, not this record's.
 */
export function inventoryChanged(recorded: Inventory | null, next: Inventory): boolean {
  if (!recorded) return true;
  const { diskFreeGiB: freeA, pool: poolA, pools: poolsA, ...restA } = recorded;
  const { diskFreeGiB: freeB, pool: poolB, pools: poolsB, ...restB } = next;
  if (!sameFields(restA, restB)) return true;
  if (poolsChanged(poolsA ?? {}, poolsB ?? {})) return true;
  const toleranceGiB = Math.max(1, next.diskGiB * SPACE_TOLERANCE);
  if (Math.abs(freeA - freeB) >= toleranceGiB) return true;
  if (!poolA || !poolB) return poolA !== poolB;
  if (poolA.volumes !== poolB.volumes || poolA.virtualBytes !== poolB.virtualBytes) return true;
  const tolerance = toleranceGiB * GIB;
  return Math.abs(poolA.allocatedBytes - poolB.allocatedBytes) >= tolerance ||
    Math.abs(poolA.freeBytes - poolB.freeBytes) >= tolerance;
}

/**
 * Pools appeared, went, changed their volume count or error, or their free space moved by
 * 1 % of their size (at least 16 MiB): small loop-backed pools are reported closely enough
 * for the free-space checks of volume creates.
 */
function poolsChanged(
  a: NonNullable<Inventory["pools"]>,
  b: NonNullable<Inventory["pools"]>,
): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) {
    const x = a[k];
    const y = b[k];
    if (!x || !y || x.volumes !== y.volumes || x.error !== y.error) return true;
    if (x.totalBytes !== y.totalBytes) return true;
    const tolerance = Math.max(16 * 2 ** 20, y.totalBytes * 0.01);
    if (Math.abs(x.freeBytes - y.freeBytes) >= tolerance) return true;
  }
  return false;
}

/** Equal field by field, whatever the order of the keys (the recorded copy went through a schema). */
function sameFields(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return false;
  return true;
}
