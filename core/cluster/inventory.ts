/** What a host reports about itself when it joins and periodically after. */
import type { Inventory } from "../fsm/mod.ts";
import { VERSION } from "../version.ts";

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
  return {
    cpus: navigator.hardwareConcurrency,
    memoryMiB: Math.round(mem.total / 1024 / 1024),
    diskGiB: disk.total,
    diskFreeGiB: disk.free,
    accel: probe ? await probe() : null,
    arch: Deno.build.arch,
    kernel: Deno.osRelease(),
    hostname: Deno.hostname(),
    version: VERSION,
  };
}
