/**
 * Start-up housekeeping of a host's files. Temporary files are only ever a
 * crash's leftovers (every finished file is renamed away from its temporary
 * name), so they are removed. Volumes and blobs that no VM or image in
 * cluster state refers to are only reported: they may be disks kept on
 * purpose (`--keep-disks`), or state may be about to refer to them, and
 * deleting a guest's disk by mistake cannot be undone.
 */
import { join } from "node:path";
import { sweepTempFiles } from "../../core/store/mod.ts";
import type { ImageRecord, VmRecord } from "../../core/fsm/mod.ts";
import type { DirPool } from "./dir_pool.ts";
import type { BlobStore } from "./blob_store.ts";

/**
 * Removes leftover temporary files from the node's data dir and the stores
 * under it (one level into `vms/` for launch files, seeds and consoles).
 * Returns the removed paths.
 */
export async function sweepDataDir(dataDir: string): Promise<string[]> {
  const dirs = [
    dataDir,
    join(dataDir, "snapshots"),
    join(dataDir, "blobs"),
    join(dataDir, "pool"),
    join(dataDir, "pool", ".templates"),
  ];
  try {
    for await (const e of Deno.readDir(join(dataDir, "vms"))) {
      if (e.isDirectory) dirs.push(join(dataDir, "vms", e.name));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const removed: string[] = [];
  for (const dir of dirs) removed.push(...await sweepTempFiles(dir, isOldStyleTemp));
  return removed;
}

/** Temporary names of earlier versions: `node.json.tmp-<uuid>`, `seed.iso.tmp`. */
function isOldStyleTemp(name: string): boolean {
  return /\.tmp(-[0-9a-f]{8}-[0-9a-f-]{27})?$/.test(name);
}

export interface Orphans {
  /** Volume names in the pool that no VM's disks name (and that back no other volume). */
  volumes: string[];
  /** Blob hashes that no image refers to. */
  blobs: string[];
}

/** What on this host's disks the cluster state does not know about. */
export async function findOrphans(
  pool: DirPool,
  blobs: BlobStore,
  state: {
    vms(): VmRecord[];
    images(): ImageRecord[];
    /** Volumes recorded on their own (core/fsm/volumes.ts): not orphans either. */
    volumes?: { all(): { name: string }[] };
  },
): Promise<Orphans> {
  const usedVolumes = new Set(state.vms().flatMap((vm) => vm.disks.map((d) => d.volume)));
  for (const v of state.volumes?.all() ?? []) usedVolumes.add(v.name);
  const volumes = await pool.list();
  const backing = new Set(volumes.map((v) => v.backing).filter((b) => b !== null));
  const usedBlobs = new Set(
    state.images().flatMap((i) => [i.kernel, i.initrd, i.disk].filter((b) => b !== undefined))
      .map((b) => b.sha256),
  );
  return {
    volumes: volumes.map((v) => v.name).filter((n) => !usedVolumes.has(n) && !backing.has(n)),
    blobs: (await blobs.list()).filter((sha) => !usedBlobs.has(sha)),
  };
}
