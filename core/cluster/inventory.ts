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
