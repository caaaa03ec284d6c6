/**
 * Small file-system helpers shared by the node's stores, and the one way this
 * program makes a file durable: write every byte, fsync the file, rename it
 * into place, fsync the directory. A rename is only durable once the
 * directory holding the new name is synced; without that, a power loss can
 * bring back the old name (or no name at all) even though the data was synced.
 */
import { basename, dirname, join } from "node:path";

/** Whether `path` exists; errors other than "not found" (permissions, I/O) are not hidden. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Writes all of `data`: `write()` may write fewer bytes than it was given
 * (and says how many), so a single call can silently truncate a file.
 */
export async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const n = await w.write(data.subarray(off));
    if (n <= 0) throw new Deno.errors.WriteZero(`wrote ${off} of ${data.length} bytes`);
    off += n;
  }
}

/** Makes the directory entries of `dir` (creations, renames, removals) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}

/** fsyncs an existing file (e.g. one written by `qemu-img`, which does not sync). */
export async function fsyncFile(path: string): Promise<void> {
  const f = await Deno.open(path, { read: true, write: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
}

/**
 * Moves a finished temporary file to its final name durably: its data is
 * synced before the rename (or the new name could point at a hole after a
 * crash), and the directory after it (or the rename itself could be lost).
 * Pass `synced: true` when the caller already fsynced the file.
 */
export async function renameDurably(
  tmp: string,
  final: string,
  opts: { synced?: boolean } = {},
): Promise<void> {
  if (!opts.synced) await fsyncFile(tmp);
  await Deno.rename(tmp, final);
  await fsyncDir(dirname(final));
  if (dirname(tmp) !== dirname(final)) await fsyncDir(dirname(tmp));
}

/** Prefix of every temporary file this program creates next to its final name. */
export const TEMP_PREFIX = ".tmp-";

/** A temporary name beside `path`; the startup sweep removes such files left by a crash. */
export function tempPathFor(path: string, ext = ""): string {
  return join(dirname(path), `${TEMP_PREFIX}${basename(path)}-${crypto.randomUUID()}${ext}`);
}

/** Writes a file atomically and durably (temp file, write all, fsync, rename, fsync dir). */
export async function writeFileDurably(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
): Promise<void> {
  await renameDurably(await writeSyncedTemp(path, data, mode), path, { synced: true });
}

/**
 * The first half of {@link writeFileDurably}: `data` written and synced under a temporary name
 * beside `path` (removed again if that fails); returns that name, for the caller to rename
 * (`renameDurably(tmp, path, { synced: true })`) once it may take `path`'s place.
 */
export async function writeSyncedTemp(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
): Promise<string> {
  const tmp = tempPathFor(path);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode });
  try {
    await writeAll(file, bytes);
    await file.sync();
  } catch (err) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  file.close();
  return tmp;
}

/**
 * Removes temporary files a crash left behind in `dir` (not recursive):
 * names starting with {@link TEMP_PREFIX}, plus any `extra` test. Returns the
 * removed paths. A missing directory is not an error.
 */
export async function sweepTempFiles(
  dir: string,
  extra: (name: string) => boolean = () => false,
): Promise<string[]> {
  const removed: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile || !(e.name.startsWith(TEMP_PREFIX) || extra(e.name))) continue;
      await Deno.remove(join(dir, e.name));
      removed.push(join(dir, e.name));
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return removed;
    throw err;
  }
  if (removed.length) await fsyncDir(dir);
  return removed;
}
