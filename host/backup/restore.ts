/**
 * Restoring a backup chain into a volume: `qemu-img convert` of the chain's
 * newest file (qemu-img follows the backing files down to the full backup)
 * into a self-contained qcow2, with progress and abort.
 *
 * The volume is written with `-t none` (O_DIRECT, past the page cache) and 16
 * requests in flight, out of order (`-W -m 16`): the restore must be on disk
 * before it counts as done (the caller syncs it), and through the page cache
 * the same bytes are written twice over, throttled behind whatever else the
 * host has dirty. Measured here for 1 GiB, sync included: 0.9–1.4 s, against
 * 0.9–2.8 s through the page cache (`-W -m 16 -C`), 3–8 s with 1 GiB of other
 * dirty pages, and 2.7 s or more with qemu-img's defaults. The chain is read
 * with O_DIRECT too (`-T none`): it comes from a backup target, cold, and is
 * read once, so the page cache only costs (a 1 GiB chain restored in 1.25–1.42 s
 * this way, 1.90–2.21 s through the page cache, bench:backup) and would push
 * out what the host's VMs have cached. A filesystem that refuses O_DIRECT gets
 * the page-cache way.
 *
 * @module
 */
import { ConflictError, NovaError } from "../../core/errors/mod.ts";

/** How the chain is converted: straight to disk first, then through the page cache. */
const MODES = [["-t", "none", "-T", "none", "-W", "-m", "16"], ["-W", "-m", "16", "-C"]];

/**
 * Converts qcow2 chain `src` (its top file) into a new qcow2 at `dst`. `onPercent` sees
 * qemu-img's progress; `signal` kills it (the partial `dst` is removed either way).
 */
export async function convertChain(
  src: string,
  dst: string,
  opts: { signal: AbortSignal; onPercent: (p: number) => void },
): Promise<void> {
  for (const [i, mode] of MODES.entries()) {
    try {
      return await convertOnce(src, dst, mode, opts);
    } catch (err) {
      const direct = mode.includes("none") && /O_DIRECT|Invalid argument/i.test(String(err));
      if (opts.signal.aborted || !direct || i === MODES.length - 1) throw err;
    }
  }
}

async function convertOnce(
  src: string,
  dst: string,
  mode: string[],
  opts: { signal: AbortSignal; onPercent: (p: number) => void },
): Promise<void> {
  const child = new Deno.Command("qemu-img", {
    args: ["convert", "-p", ...mode, "-O", "qcow2", src, dst],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  };
  opts.signal.addEventListener("abort", kill, { once: true });
  let stderr = "";
  const readErr = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderr = (stderr + c).slice(-4096);
    }
  })();
  try {
    for await (const c of child.stdout.pipeThrough(new TextDecoderStream())) {
      const all = [...c.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
      if (all.length) opts.onPercent(Number(all[all.length - 1][1]));
    }
    const status = await child.status;
    await readErr;
    if (opts.signal.aborted) throw opts.signal.reason ?? new ConflictError("restore aborted");
    if (!status.success) {
      throw new NovaError(
        "internal",
        `qemu-img convert failed: ${stderr.trim().split("\n").pop()}`,
      );
    }
  } catch (err) {
    await Deno.remove(dst).catch(() => {});
    throw err;
  } finally {
    opts.signal.removeEventListener("abort", kill);
  }
}
