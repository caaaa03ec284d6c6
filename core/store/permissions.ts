/**
 * Permissions of a node's data dir. The dir holds the Raft log and state
 * (token hashes, cloud-init password hashes and user-data), the admin token
 * and the node's identity: only the node's own user may read any of it.
 *
 * Modes are set explicitly at every start, not only at creation: a dir made
 * by hand (or by an older version) with 0755 and 0644 files is tightened too.
 * SQLite creates its `-wal` and `-shm` files with the mode of the database
 * file, so a 0600 database keeps its later companions 0600 as well.
 *
 * @module
 */
import { join } from "node:path";

/** The data dir's own mode. */
export const DATA_DIR_MODE = 0o700;
/** Mode of every secret file in it. */
export const PRIVATE_FILE_MODE = 0o600;

/** Databases whose files (and SQLite companions) are private. */
const DATABASES = ["state.db", "raft.db", "metrics.db"];
/** Identity, tokens and keys (relative to the data dir). */
const SECRET_FILES = ["node.json", "admin.token", "tls/node.key"];
/** Subdirectories holding copies of replicated state. */
const PRIVATE_DIRS = ["snapshots"];

/** Every file {@link secureDataDir} makes 0600, relative to the data dir. */
export function privateFiles(): string[] {
  return [
    ...DATABASES.flatMap((db) => [db, `${db}-wal`, `${db}-shm`, `${db}-journal`]),
    ...SECRET_FILES,
  ];
}

/**
 * Sets the data dir to 0700, its databases, identity and token files to 0600,
 * and its snapshot dir to 0700, whatever they were before. Missing files are
 * skipped; other errors are thrown (a node that cannot protect its secrets
 * should not start). Returns the paths whose mode was changed.
 */
export async function secureDataDir(dataDir: string): Promise<string[]> {
  const changed: string[] = [];
  const set = async (path: string, mode: number) => {
    let st: Deno.FileInfo;
    try {
      st = await Deno.lstat(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    if (st.isSymlink) return; // never chmod through a link planted in the dir
    if (((st.mode ?? 0) & 0o7777) === mode) return;
    await Deno.chmod(path, mode);
    changed.push(path);
  };
  await set(dataDir, DATA_DIR_MODE);
  for (const dir of PRIVATE_DIRS) await set(join(dataDir, dir), DATA_DIR_MODE);
  for (const file of privateFiles()) await set(join(dataDir, file), PRIVATE_FILE_MODE);
  return changed;
}

/**
 * Creates `path` empty with mode 0600 if it does not exist, and makes an
 * existing one 0600: call before opening a SQLite database, which would
 * otherwise create it 0644 (and its `-wal`/`-shm` alike).
 */
export function ensurePrivateFileSync(path: string): void {
  Deno.openSync(path, { create: true, write: true, mode: PRIVATE_FILE_MODE }).close();
  Deno.chmodSync(path, PRIVATE_FILE_MODE);
}
