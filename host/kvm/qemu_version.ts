/**
 * Which QEMU release a host runs, known before the first launch: some command-line options
 * differ between the releases novactl supports (Debian bookworm's 7.2, and 10.0 from
 * bookworm-backports), so the arguments depend on it. Read once per binary from
 * `BINARY --version`, as found on PATH; a running QEMU says the same through QMP
 * `query-version` ({@link queryVersion} in ./commands.ts).
 */
import { NovaError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";

/** A QEMU release. */
export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
}

/**
 * The release in `qemu-system-x86_64 --version` output, e.g.
 * "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"; null when the text
 * names none.
 */
export function parseQemuVersion(text: string): QemuVersion | null {
  const m = /QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3] ?? 0) };
}

/** Whether `v` is release `major.minor` or newer. */
export function atLeast(v: QemuVersion, major: number, minor = 0): boolean {
  return v.major > major || (v.major === major && v.minor >= minor);
}

/** `major.minor.micro`. */
export function formatQemuVersion(v: QemuVersion): string {
  return `${v.major}.${v.minor}.${v.micro}`;
}

const cache = new Map<string, Promise<QemuVersion>>();

/**
 * The release of `binary` (looked up on PATH unless a path), asked once per process and
 * binary. A failed attempt is not cached, so a host that gets QEMU installed later recovers.
 *
 * @throws {NovaError} "unavailable" when the binary cannot run or does not say its version.
 */
export function qemuBinaryVersion(binary = "qemu-system-x86_64"): Promise<QemuVersion> {
  let v = cache.get(binary);
  if (!v) {
    v = readVersion(binary);
    cache.set(binary, v);
    v.catch(() => cache.delete(binary));
  }
  return v;
}

async function readVersion(binary: string): Promise<QemuVersion> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(binary, {
      args: ["--version"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    throw new NovaError(
      "unavailable",
      `cannot run ${binary} (Debian package qemu-system-x86): ${(err as Error).message}`,
    );
  }
  const text = new TextDecoder().decode(out.stdout);
  const v = out.success ? parseQemuVersion(text) : null;
  if (!v) {
    const said = (text + new TextDecoder().decode(out.stderr)).trim().split("\n")[0];
    throw new NovaError("unavailable", `${binary} --version did not name a QEMU release: ${said}`);
  }
  log.info("QEMU release", { binary, version: formatQemuVersion(v) });
  return v;
}
