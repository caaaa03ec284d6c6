/**
 * Chooses the accelerator for this host. /dev/kvm existing proves nothing on
 * nested machines (guests hang there), so KVM is used only when a tiny guest
 * actually runs to completion under it within a deadline.
 */
import { log } from "../../core/log/mod.ts";

export type Accel = "kvm" | "tcg";

/**
 * A 512-byte boot sector: `mov al,1; out 0xf4,al; hlt`. With an
 * isa-debug-exit device on port 0xf4, QEMU exits with status (1 << 1) | 1 = 3
 * only if the guest really executed code.
 */
function probeBootSector(): Uint8Array {
  const sector = new Uint8Array(512);
  sector.set([0xb0, 0x01, 0xe6, 0xf4, 0xf4]);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

const PROBE_EXIT_STATUS = 3;

/** Runs the probe guest under `accel`; true when it ran to its exit instruction in time. */
export async function guestRunsUnder(accel: Accel, timeoutMs = 5_000): Promise<boolean> {
  if (accel === "kvm") {
    try {
      await Deno.stat("/dev/kvm");
    } catch {
      return false;
    }
  }
  const dir = await Deno.makeTempDir({ prefix: "novactl-accel-" });
  try {
    const disk = `${dir}/boot.img`;
    await Deno.writeFile(disk, probeBootSector());
    const child = new Deno.Command("qemu-system-x86_64", {
      args: [
        // The CPU model of real guests (host/kvm/qemu.ts): on a nested host a default-model
        // probe can pass under KVM while `-cpu host` fails to set its MSRs at every start.
        "-cpu",
        accel === "kvm" ? "host" : "max",
        "-accel",
        accel,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-m",
        "16",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive",
        `file=${disk},format=raw,if=ide`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const status = await child.status;
    clearTimeout(timer);
    return status.code === PROBE_EXIT_STATUS;
  } catch (err) {
    log.warn("accelerator probe failed", { accel, error: String(err) });
    return false;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

let chosen: Promise<Accel> | null = null;

/**
 * The accelerator for this process, probed once. NOVACTL_ACCEL=kvm|tcg
 * overrides the probe (operators who know their hardware; tests).
 */
export function hostAccel(): Promise<Accel> {
  const forced = Deno.env.get("NOVACTL_ACCEL");
  if (forced === "kvm" || forced === "tcg") return Promise.resolve(forced);
  chosen ??= (async () => {
    const accel: Accel = await guestRunsUnder("kvm") ? "kvm" : "tcg";
    log.info("accelerator chosen", { accel });
    return accel;
  })();
  return chosen;
}
