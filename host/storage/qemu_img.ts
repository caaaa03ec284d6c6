/** Runs `qemu-img` with a deadline; failures carry its stderr. */
import { NovaError, TimeoutError } from "../../core/errors/mod.ts";

export interface ImageInfo {
  "virtual-size": number;
  "actual-size"?: number;
  format: string;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
}

/**
 * Limits for `qemu-img` reading an image it cannot trust (an upload): a crafted header can make
 * it allocate or compute without end (CVE-2015-5162), so it gets 1 GiB of address space and
 * 30 s of CPU, as OpenStack gives its image probes.
 */
export const PROBE_LIMITS = { addressSpaceBytes: 2 ** 30, cpuSeconds: 30 };

/**
 * Runs `qemu-img ARGS`; with `limits`, under `prlimit` (RLIMIT_AS, RLIMIT_CPU), so a hostile
 * image fails the probe instead of exhausting the host.
 */
export async function qemuImg(
  args: string[],
  timeoutMs = 120_000,
  limits?: { addressSpaceBytes: number; cpuSeconds: number },
): Promise<string> {
  const argv = limits
    ? [
      "prlimit",
      `--as=${limits.addressSpaceBytes}`,
      `--cpu=${limits.cpuSeconds}`,
      "--",
      "qemu-img",
      ...args,
    ]
    : ["qemu-img", ...args];
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  })
    .spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  let out: Deno.CommandOutput;
  try {
    out = await child.output();
  } catch (err) {
    throw new NovaError("internal", `cannot run qemu-img: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) throw new TimeoutError(`qemu-img ${args[0]} after ${timeoutMs} ms`);
  if (out.signal) {
    // SIGKILL/SIGXCPU past the CPU limit, SIGSEGV/SIGABRT when the address space ran out.
    throw new NovaError(
      limits ? "validation" : "internal",
      `qemu-img ${args[0]} ended by ${out.signal}${limits ? " (past its resource limits)" : ""}`,
    );
  }
  const stderr = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) throw new NovaError("internal", `qemu-img ${args[0]} failed: ${stderr}`);
  return new TextDecoder().decode(out.stdout);
}

/**
 * `qemu-img info` of an image, run under `limits` ({@link PROBE_LIMITS}): every probe of an
 * image novactl did not make itself goes through here.
 */
export async function imageInfo(path: string, limits = PROBE_LIMITS): Promise<ImageInfo> {
  return JSON.parse(
    await qemuImg(["info", "--output=json", "-U", path], 120_000, limits),
  ) as ImageInfo;
}
