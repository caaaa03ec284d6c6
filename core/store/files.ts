/** Small file-system helpers shared by the node's stores. */
import { dirname } from "node:path";

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
 * Moves a fully written `tmp` file to `dest` so that after a crash either the
 * old or the complete new file is found: the data is fsynced before the
 * rename, and the directory after it (the rename itself is durable only then).
 */
export async function renameDurably(tmp: string, dest: string): Promise<void> {
  await syncFile(tmp);
  await Deno.rename(tmp, dest);
  await syncDir(dirname(dest));
}

/** fsyncs a file's data (and size) to disk. */
export async function syncFile(path: string): Promise<void> {
  const file = await Deno.open(path, { read: true, write: true });
  try {
    await file.sync();
  } finally {
    file.close();
  }
}

/** fsyncs a directory, making renames and creations in it durable. */
export async function syncDir(dir: string): Promise<void> {
  const d = await Deno.open(dir, { read: true });
  try {
    await d.sync();
  } finally {
    d.close();
  }
}
