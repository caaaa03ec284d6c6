/**
 * Offline rewrites of a data dir must never meet a running node on it, and a
 * node must not start while one runs.
 *
 * - A running node is found by the pid it wrote to `DIR/listen.json` at start
 *   (cmd/node_start.ts): it runs when that process is alive and its command
 *   line names this data dir (or a parent of it, as `node simulate-hosts` does)
 *   with `--data-dir`. A stale file whose pid now belongs to another program
 *   does not count; a process whose command line cannot be read does.
 * - A rewrite in progress holds `DIR/recover.lock` (its pid); `node start`
 *   refuses while that process lives. A rewrite that crashed leaves the data
 *   dir consistent (see force_new_cluster.ts), so a stale lock is ignored.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { ConflictError } from "../errors/mod.ts";
import { writeFileDurably } from "../store/mod.ts";

/** Where a node reports its pid (and address) at start. */
const LISTEN_FILE = "listen.json";
/** Held by a rewrite of the data dir while it runs. */
export const RECOVER_LOCK_FILE = "recover.lock";

/** The pid in a small JSON file `{"pid": N}`, or null when absent or unreadable. */
async function pidIn(path: string): Promise<number | null> {
  try {
    const pid = Number((JSON.parse(await Deno.readTextFile(path)) as { pid?: unknown }).pid);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** True when `pid` is a live (not zombie) process. */
export function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/**
 * True when process `pid` runs with `--data-dir` naming `dataDir` or a parent of
 * it. Unreadable command lines count as a match: refusing wrongly is the safe side.
 */
function servesDataDir(pid: number, dataDir: string): boolean {
  let args: string[];
  let cwd: string;
  try {
    args = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
    cwd = Deno.readLinkSync(`/proc/${pid}/cwd`);
  } catch {
    return true;
  }
  const target = realpathOr(resolve(dataDir));
  for (let i = 0; i < args.length; i++) {
    let value: string | undefined;
    if (args[i] === "--data-dir") value = args[i + 1];
    else if (args[i].startsWith("--data-dir=")) value = args[i].slice("--data-dir=".length);
    if (!value) continue;
    const dir = realpathOr(resolve(cwd, value));
    if (target === dir || target.startsWith(dir + "/")) return true;
  }
  return false;
}

function realpathOr(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

/**
 * @throws {ConflictError} naming the pid when a node process runs on `dataDir`,
 *   or another rewrite holds its lock.
 */
export async function assertNodeStopped(dataDir: string): Promise<void> {
  const pid = await pidIn(join(dataDir, LISTEN_FILE));
  if (pid !== null && pid !== Deno.pid && isAlive(pid) && servesDataDir(pid, dataDir)) {
    throw new ConflictError(
      `the node process ${pid} is running on ${dataDir} (${LISTEN_FILE}); stop it first`,
      { pid, dataDir },
    );
  }
  await assertNoRewriteRunning(dataDir);
}

/**
 * Refuses while a rewrite of `dataDir` (cluster recover) runs in another process.
 * @throws {ConflictError}
 */
export async function assertNoRewriteRunning(dataDir: string): Promise<void> {
  const pid = await pidIn(join(dataDir, RECOVER_LOCK_FILE));
  if (pid !== null && pid !== Deno.pid && isAlive(pid)) {
    throw new ConflictError(
      `process ${pid} is rewriting ${dataDir} (${RECOVER_LOCK_FILE}); wait for it to finish`,
      { pid, dataDir },
    );
  }
}

/** Takes the rewrite lock of `dataDir` for this process; the returned function releases it. */
export async function lockForRewrite(dataDir: string): Promise<() => Promise<void>> {
  await assertNodeStopped(dataDir);
  const path = join(dataDir, RECOVER_LOCK_FILE);
  await writeFileDurably(path, JSON.stringify({ pid: Deno.pid }) + "\n");
  return async () => {
    await Deno.remove(path).catch(() => {});
  };
}
