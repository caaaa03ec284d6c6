/**
 * The storage pools of one host: turns the replicated pool records
 * (core/fsm/pools.ts) into backends (./dir_pool.ts, ./btrfs.ts), prepares a
 * pool before it is recorded (checks the path, makes and mounts a loop
 * image), mounts loop-backed pools again after a reboot, and measures every
 * pool this host has for its inventory.
 *
 * A pool's `source` may contain `{node}`, replaced by each host's name, so
 * that hosts sharing one machine (tests, demos) each have their own
 * directory for a pool on every host.
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import type { PoolHostUsage, PoolRecord, PoolSpec } from "../../core/fsm/mod.ts";
import { log } from "../../core/log/mod.ts";
import { pathExists } from "../../core/store/mod.ts";
import { assertBtrfs, BtrfsPool, ensureLoopMount, removeLoopMount } from "./btrfs.ts";
import { DirPool, type VolumePool } from "./dir_pool.ts";

/** What the host's pools need of the cluster: the pools as recorded. */
export interface PoolSource {
  readonly nodeName: string;
  pool(name: string): PoolRecord | null;
  pools(): PoolRecord[];
}

/** `source` with `{node}` replaced by the host's name. */
export function sourceOn(source: string, node: string): string {
  return source.replaceAll("{node}", node);
}

export class HostPools {
  readonly #backends = new Map<string, VolumePool>();

  /** `local` is the built-in `dir` pool (DATA_DIR/pool). */
  constructor(readonly local: DirPool, private readonly cluster: PoolSource) {}

  /** Whether this host has `pool` (every host has those without a node). */
  here(pool: PoolRecord): boolean {
    return pool.node === null || pool.node === this.cluster.nodeName;
  }

  /** The backend of the pool named `name` on this host. */
  backend(name: string): VolumePool {
    if (name === "dir") return this.local;
    const pool = this.cluster.pool(name);
    if (!pool) throw new NotFoundError("pool", name);
    if (!this.here(pool)) {
      throw new ConflictError(`pool "${name}" is on ${pool.node}, not on ${this.cluster.nodeName}`);
    }
    const root = sourceOn(pool.source!, this.cluster.nodeName);
    const key = `${pool.driver}\0${root}`;
    let b = this.#backends.get(key);
    if (!b) {
      b = pool.driver === "btrfs" ? new BtrfsPool(root) : new DirPool(root);
      this.#backends.set(key, b);
    }
    return b;
  }

  /**
   * Checks (and for a loop-backed btrfs pool, makes and mounts) a pool about
   * to be created on this host; `undo` takes back what it made, for when the
   * record is refused.
   */
  async prepare(spec: PoolSpec): Promise<{ undo(): Promise<void> }> {
    const root = sourceOn(spec.source!, this.cluster.nodeName);
    const nothing = { undo: async () => {} };
    if (spec.driver === "btrfs") {
      if (spec.loop) {
        const image = sourceOn(spec.loop.image, this.cluster.nodeName);
        if (!image.startsWith("/")) throw ValidationError.field("image", "an absolute path");
        const made = await ensureLoopMount(image, root, spec.loop.sizeBytes);
        await assertBtrfs(root);
        await new BtrfsPool(root).init();
        return {
          undo: async () => {
            if (made.created) await removeLoopMount(image, root);
          },
        };
      }
      await assertBtrfs(root);
      await new BtrfsPool(root).init();
      return nothing;
    }
    if (spec.driver === "shared-dir") {
      if (!(await isDirectory(root))) {
        throw ValidationError.field(
          "source",
          `${root} is not a directory on ${this.cluster.nodeName}`,
        );
      }
      return nothing;
    }
    const existed = await pathExists(root);
    await Deno.mkdir(root, { recursive: true, mode: 0o700 });
    if (!(await isDirectory(root))) {
      throw ValidationError.field("source", `${root} is not a directory`);
    }
    return { undo: async () => void (!existed && await Deno.remove(root).catch(() => {})) };
  }

  /** After a pool's record is deleted: unmounts and removes the loop image it made. */
  async release(pool: PoolRecord): Promise<void> {
    if (!this.here(pool)) return;
    this.#backends.delete(`${pool.driver}\0${sourceOn(pool.source!, this.cluster.nodeName)}`);
    if (pool.loop) {
      await removeLoopMount(
        sourceOn(pool.loop.image, this.cluster.nodeName),
        sourceOn(pool.source!, this.cluster.nodeName),
      );
    }
  }

  /** Mounts this host's loop-backed pools that are not mounted (after a reboot). */
  async mountAll(): Promise<void> {
    for (const p of this.cluster.pools()) {
      if (!p.loop || !this.here(p)) continue;
      const image = sourceOn(p.loop.image, this.cluster.nodeName);
      try {
        if (!(await pathExists(image))) {
          log.warn("loop image of a pool is missing", { pool: p.name, image });
          continue;
        }
        const { mounted } = await ensureLoopMount(
          image,
          sourceOn(p.source!, this.cluster.nodeName),
          p.loop.sizeBytes,
        );
        if (mounted) log.info("mounted loop-backed pool", { pool: p.name, image });
      } catch (err) {
        log.warn("cannot mount loop-backed pool", { pool: p.name, error: String(err) });
      }
    }
  }

  /** Every pool this host has, measured (a pool it cannot use says why). */
  async usage(): Promise<Record<string, PoolHostUsage>> {
    const out: Record<string, PoolHostUsage> = {};
    for (const p of this.cluster.pools()) {
      if (!this.here(p)) continue;
      try {
        const b = this.backend(p.name);
        if (p.driver === "btrfs") await assertBtrfs(b.root);
        else if (!(await isDirectory(b.root))) throw new Error(`${b.root} is not a directory`);
        const u = await b.usage();
        out[p.name] = {
          totalBytes: u.totalBytes ?? 0,
          freeBytes: u.freeBytes,
          allocatedBytes: u.allocatedBytes,
          volumes: u.volumes,
        };
      } catch (err) {
        out[p.name] = {
          totalBytes: 0,
          freeBytes: 0,
          allocatedBytes: 0,
          volumes: 0,
          error: String((err as Error).message ?? err).slice(0, 500),
        };
      }
    }
    return out;
  }

  /** Where a received file may be staged for `pool` (on its filesystem). */
  stagingDir(name: string): string {
    return this.backend(name).root;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}
