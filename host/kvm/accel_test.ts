import { guestRunsUnder } from "./accel.ts";
import { assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

/** Whether QEMU gets past vCPU set-up with the CPU model real KVM guests use. */
async function cpuHostStartsUnderKvm(): Promise<boolean> {
  try {
    await Deno.stat("/dev/kvm");
  } catch {
    return false;
  }
  const child = new Deno.Command("qemu-system-x86_64", {
    args: ["-accel", "kvm", "-cpu", "host", "-nodefaults", "-display", "none", "-m", "16", "-S"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Paused (-S) QEMU that set up its vCPUs keeps running; one that failed exits at once.
  const exited = await Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 3_000)),
  ]);
  if (!exited) child.kill("SIGKILL");
  await child.status;
  await child.stderr.cancel();
  return !exited;
}

testWithTimeout({
  name: "the KVM probe agrees with a real start of the CPU model guests use",
  timeoutMs: 2 * MINUTE,
}, async () => {
  // On this nested machine a default-model guest runs under KVM while `-cpu host` fails to set
  // its MSRs: a probe that does not use the guests' model would choose KVM and every VM would fail.
  const guestsCanStart = await cpuHostStartsUnderKvm();
  assertEquals(await guestRunsUnder("kvm"), guestsCanStart);
  assertEquals(await guestRunsUnder("tcg"), true, "TCG always runs the probe");
});
