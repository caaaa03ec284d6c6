/**
 * The btrfs storage backend (Debian `btrfs-progs`): a pool is a btrfs
 * filesystem (an existing mount, or a loop image the pool made and mounts),
 * and each volume is a subvolume of it holding one qcow2 file with no
 * backing file.
 *
 * Copy-on-write does what backing chains do in the `dir` pool, without the
 * chains: a disk made from an image is a snapshot of the image's converted
 * copy (made once per image, under `.images/`), a linked or full clone is a
 * snapshot of the source volume, and a disk snapshot is a read-only snapshot
 * under `.snapshots/VOLUME@TAG`. All of them are instant and independent:
 * deleting the source never breaks a clone.
 *
 * Cold migration sends a volume with `btrfs send` (from a fresh read-only
 * snapshot, incremental with `-p` against the newest snapshot the receiver
 * also has) and `btrfs receive`.
 *
 * Layout under the pool's root:
 * - `NAME/disk.qcow2`: volume NAME (subvolume `NAME`)
 * - `.snapshots/NAME@TAG`: read-only snapshots of it
 * - `.images/KEY`: read-only converted copies of image disks
 * - `.tmp-*`: work in progress (swept at start)
 *
 * @module
 */
import { basename, join } from "node:path";
import { createHash } from "node:crypto";
import {
  ConflictError,
  NotFoundError,
  NovaError,
  TimeoutError,
  ValidationError,
} from "../../core/errors/mod.ts";
import { fsyncDir, pathExists, TEMP_PREFIX } from "../../core/store/mod.ts";
import { imageInfo, qemuImg } from "./qemu_img.ts";
import {
  checkSize,
  growVolume,
  type PoolUsage,
  poolUsage,
  readQcow2Header,
  type Volume,
  type VolumePool,
} from "./dir_pool.ts";

const DISK_FILE = "disk.qcow2";
/** Tags of the snapshots cold migration sends from (`mig-<ms>`; ordered by time). */
export const MIGRATION_TAG = "mig-";
const SNAPSHOTS = ".snapshots";
const IMAGES = ".images";
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/;
const TAG = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/;

/** Runs a command (btrfs, mount, mkfs.btrfs); its stderr is the error's message. */
export async function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  let out: Deno.CommandOutput;
  try {
    out = await child.output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new NovaError("unavailable", `${cmd} is not installed (Debian btrfs-progs)`);
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (out.signal === "SIGKILL") {
    throw new TimeoutError(`${cmd} ${args[0]} took over ${timeoutMs} ms`);
  }
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join("; ");
    throw new NovaError(
      "internal",
      `${cmd} ${args.slice(0, 2).join(" ")}: ${err || `exit ${out.code}`}`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/** The filesystem type at `path` (`btrfs`, `ext2/ext3`, `tmpfs`, ...), as `stat -f` names it. */
export async function fsType(path: string): Promise<string> {
  return (await run("stat", ["-f", "-c", "%T", path])).trim();
}

/**
 * Throws a ValidationError naming `source` unless `path` is a directory on a
 * btrfs filesystem.
 */
export async function assertBtrfs(path: string): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch {
    throw ValidationError.field("source", `${path} does not exist`);
  }
  if (!st.isDirectory) throw ValidationError.field("source", `${path} is not a directory`);
  const type = await fsType(path);
  if (type !== "btrfs") {
    throw ValidationError.field(
      "source",
      `${path} is on a ${type} filesystem, not btrfs: mount a btrfs filesystem there, or give --size to make a loop-backed one`,
    );
  }
}

/** Whether `path` is a mount point (its device differs from its parent's). */
async function isMountPoint(path: string): Promise<boolean> {
  const mounts = await Deno.readTextFile("/proc/self/mounts");
  const want = (await Deno.realPath(path)).replace(/ /g, "\\040");
  return mounts.split("\n").some((l) => l.split(" ")[1] === want);
}

/**
 * Makes (when missing) a sparse image of `sizeBytes` with a btrfs filesystem
 * at `image`, and mounts it (through a loop device) on `mountPoint`, unless
 * something is mounted there already. Returns whether it made the image.
 */
export async function ensureLoopMount(
  image: string,
  mountPoint: string,
  sizeBytes: number,
): Promise<{ created: boolean; mounted: boolean }> {
  let created = false;
  if (!(await pathExists(image))) {
    const f = await Deno.open(image, { write: true, createNew: true, mode: 0o600 });
    try {
      await f.truncate(sizeBytes);
    } finally {
      f.close();
    }
    try {
      await run("mkfs.btrfs", ["-q", image]);
    } catch (err) {
      await Deno.remove(image).catch(() => {});
      throw err;
    }
    created = true;
  }
  await Deno.mkdir(mountPoint, { recursive: true });
  if (await isMountPoint(mountPoint)) return { created, mounted: false };
  await run("mount", ["-o", "loop", image, mountPoint]);
  return { created, mounted: true };
}

/** Unmounts a loop-backed pool (the loop device goes with it) and removes its image. */
export async function removeLoopMount(image: string, mountPoint: string): Promise<void> {
  if (await pathExists(mountPoint) && await isMountPoint(mountPoint)) {
    await run("umount", [mountPoint]);
  }
  await Deno.remove(image).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

/** A btrfs pool: one subvolume per volume (see the module's doc). */
export class BtrfsPool implements VolumePool {
  constructor(readonly root: string) {}

  async init(): Promise<this> {
    await assertBtrfs(this.root);
    for (const d of [SNAPSHOTS, IMAGES]) {
      await Deno.mkdir(join(this.root, d), { recursive: true, mode: 0o755 });
    }
    return this;
  }

  private dirOf(name: string): string {
    if (!VOLUME_NAME.test(name)) {
      throw ValidationError.field("volume", `"${name}" is not a valid volume name`);
    }
    return join(this.root, name);
  }

  pathOf(name: string): string {
    return join(this.dirOf(name), DISK_FILE);
  }

  private snapshotDir(name: string, tag: string): string {
    if (!TAG.test(tag)) throw ValidationError.field("snapshot", `"${tag}" is not a valid name`);
    return join(this.root, SNAPSHOTS, `${name}@${tag}`);
  }

  async has(name: string): Promise<boolean> {
    return await pathExists(this.pathOf(name));
  }

  private async mustNotExist(name: string): Promise<void> {
    if (await pathExists(this.dirOf(name))) {
      throw new ConflictError(`volume "${name}" already exists`);
    }
  }

  private async mustExist(name: string): Promise<void> {
    if (!(await this.has(name))) throw new NotFoundError("volume", name);
  }

  /**
   * Builds a subvolume under a temporary name with `fill`, then renames it to
   * the volume's: a crash never leaves a half-made volume under its name.
   */
  private async build(name: string, fill: (tmpDir: string) => Promise<void>): Promise<Volume> {
    await this.init();
    await this.mustNotExist(name);
    const tmp = join(this.root, `${TEMP_PREFIX}${crypto.randomUUID()}`);
    try {
      await fill(tmp);
      await Deno.rename(tmp, this.dirOf(name));
      await fsyncDir(this.root);
    } catch (err) {
      await deleteSubvolume(tmp).catch(() => {});
      throw err;
    }
    return await this.info(name);
  }

  async create(name: string, sizeBytes: number): Promise<Volume> {
    checkSize(sizeBytes);
    return await this.build(name, async (tmp) => {
      await run("btrfs", ["subvolume", "create", tmp]);
      await qemuImg(["create", "-q", "-f", "qcow2", join(tmp, DISK_FILE), String(sizeBytes)]);
    });
  }

  /** A writable snapshot of `source`: instant, shares every block until written. */
  async cloneLinked(source: string, name: string): Promise<Volume> {
    await this.mustExist(source);
    return await this.build(name, async (tmp) => {
      await run("btrfs", ["subvolume", "snapshot", this.dirOf(source), tmp]);
    });
  }

  /** On btrfs a full clone is the same snapshot: it depends on nothing afterwards. */
  async cloneFull(source: string, name: string): Promise<Volume> {
    return await this.cloneLinked(source, name);
  }

  /**
   * A volume starting as a copy of an image file (an immutable blob): the
   * image is converted once into a read-only subvolume, each volume is a
   * snapshot of it (no backing file), grown to `sizeBytes`.
   */
  async overlayOn(
    backing: string,
    format: string,
    name: string,
    sizeBytes?: number,
  ): Promise<Volume> {
    if (sizeBytes !== undefined) checkSize(sizeBytes);
    const base = await this.imageBase(backing, format);
    const v = await this.build(name, async (tmp) => {
      await run("btrfs", ["subvolume", "snapshot", base, tmp]);
    });
    if (sizeBytes !== undefined && sizeBytes > v.virtualBytes) {
      return await this.resize(name, sizeBytes);
    }
    return v;
  }

  private async imageBase(backing: string, format: string): Promise<string> {
    const key = createHash("sha256").update(`${backing}\0${format}`).digest("hex").slice(0, 32);
    const base = join(this.root, IMAGES, key);
    if (await pathExists(join(base, DISK_FILE))) return base;
    const tmp = join(this.root, IMAGES, `${TEMP_PREFIX}${crypto.randomUUID()}`);
    try {
      await run("btrfs", ["subvolume", "create", tmp]);
      await qemuImg(
        ["convert", "-q", "-f", format, "-O", "qcow2", backing, join(tmp, DISK_FILE)],
        3_600_000,
      );
      await run("btrfs", ["property", "set", "-ts", tmp, "ro", "true"]);
      await Deno.rename(tmp, base);
    } catch (err) {
      await deleteSubvolume(tmp).catch(() => {});
      if (await pathExists(join(base, DISK_FILE))) return base; // made concurrently
      throw err;
    }
    return base;
  }

  /**
   * Disk snapshots of a volume no QEMU writes to (or whose guest is paused):
   * read-only subvolume snapshots; `apply` swaps the volume for a writable
   * snapshot of the tag.
   */
  async snapshot(action: "create" | "apply" | "delete", name: string, tag: string): Promise<void> {
    await this.mustExist(name);
    const snap = this.snapshotDir(name, tag);
    if (action === "create") {
      if (await pathExists(snap)) throw new ConflictError(`snapshot "${tag}" of ${name} exists`);
      await run("btrfs", ["subvolume", "snapshot", "-r", this.dirOf(name), snap]);
      return;
    }
    if (!(await pathExists(snap))) throw new NotFoundError("snapshot", `${name}@${tag}`);
    if (action === "delete") return await deleteSubvolume(snap);
    const tmp = join(this.root, `${TEMP_PREFIX}${crypto.randomUUID()}`);
    await run("btrfs", ["subvolume", "snapshot", snap, tmp]);
    const old = join(this.root, `${TEMP_PREFIX}old-${crypto.randomUUID()}`);
    await Deno.rename(this.dirOf(name), old);
    await Deno.rename(tmp, this.dirOf(name));
    await fsyncDir(this.root);
    await deleteSubvolume(old);
  }

  /** Tags of `name`'s snapshots, oldest first. */
  async snapshots(name: string): Promise<string[]> {
    const out: { tag: string; at: number }[] = [];
    const prefix = `${name}@`;
    for await (const e of readDirOrNothing(join(this.root, SNAPSHOTS))) {
      if (!e.isDirectory || !e.name.startsWith(prefix)) continue;
      const st = await Deno.stat(join(this.root, SNAPSHOTS, e.name));
      out.push({ tag: e.name.slice(prefix.length), at: st.birthtime?.getTime() ?? 0 });
    }
    return out.sort((a, b) => a.at - b.at || a.tag.localeCompare(b.tag)).map((s) => s.tag);
  }

  async importFile(file: string, name: string): Promise<Volume> {
    return await this.build(name, async (tmp) => {
      await run("btrfs", ["subvolume", "create", tmp]);
      await qemuImg(["convert", "-q", "-O", "qcow2", file, join(tmp, DISK_FILE)], 3_600_000);
    });
  }

  async resize(name: string, sizeBytes: number): Promise<Volume> {
    return await growVolume(this, name, sizeBytes);
  }

  /**
   * Deletes the volume and its snapshots (nothing else depends on them); `keep` names one
   * snapshot to leave (a migrated volume's last sent one: the base of an incremental send
   * when it comes back).
   */
  async delete(name: string, keep?: string): Promise<void> {
    await this.mustExist(name);
    for (const tag of await this.snapshots(name)) {
      if (tag !== keep) await deleteSubvolume(this.snapshotDir(name, tag));
    }
    await deleteSubvolume(this.dirOf(name));
  }

  /** Drops the snapshots of a volume that no longer exists here (it is gone for good). */
  async forgetSnapshots(name: string): Promise<void> {
    if (await this.has(name)) return;
    for (const tag of await this.snapshots(name)) {
      await deleteSubvolume(this.snapshotDir(name, tag));
    }
  }

  async info(name: string): Promise<Volume> {
    await this.mustExist(name);
    const path = this.pathOf(name);
    const info = await imageInfo(path);
    return {
      name,
      path,
      virtualBytes: info["virtual-size"],
      allocatedBytes: info["actual-size"] ?? (await Deno.stat(path)).size,
      backing: null,
    };
  }

  async list(): Promise<Volume[]> {
    const out: Volume[] = [];
    for await (const e of Deno.readDir(this.root)) {
      if (!e.isDirectory || e.name.startsWith(".") || !VOLUME_NAME.test(e.name)) continue;
      const path = join(this.root, e.name, DISK_FILE);
      try {
        const header = await readQcow2Header(path);
        if (!header) continue;
        const st = await Deno.stat(path);
        out.push({
          name: e.name,
          path,
          virtualBytes: header.virtualBytes,
          allocatedBytes: (st.blocks ?? 0) * 512 || st.size,
          backing: null,
        });
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async usage(): Promise<PoolUsage> {
    return poolUsage(await this.list(), this.root);
  }

  // ---- send / receive -------------------------------------------------------------------

  /** The newest of `name`'s migration snapshots (`mig-*`) that is also in `theirs`, or null. */
  async commonBase(name: string, theirs: readonly string[]): Promise<string | null> {
    const have = new Set(theirs);
    const mine = (await this.snapshots(name)).filter((t) => t.startsWith(MIGRATION_TAG));
    return mine.reverse().find((t) => have.has(t)) ?? null;
  }

  /** The newest migration snapshot of `name` (kept after it moved away), or undefined. */
  async lastMigrationSnapshot(name: string): Promise<string | undefined> {
    return (await this.snapshots(name)).filter((t) => t.startsWith(MIGRATION_TAG)).at(-1);
  }

  /**
   * Streams volume `name` as `btrfs send` output: a new read-only snapshot
   * `TAG` of it, incremental against `parent` (one of its snapshots the
   * receiver has) when given. The snapshot stays: it is the next send's parent.
   */
  async send(
    name: string,
    tag: string,
    parent: string | null,
  ): Promise<{ stream: ReadableStream<Uint8Array>; done: Promise<void> }> {
    await this.snapshot("create", name, tag);
    const args = ["send", "-q"];
    if (parent) args.push("-p", this.snapshotDir(name, parent));
    args.push(this.snapshotDir(name, tag));
    const child = new Deno.Command("btrfs", { args, stdout: "piped", stderr: "piped" }).spawn();
    const done = (async () => {
      const [status, err] = await Promise.all([
        child.status,
        new Response(child.stderr).text(),
      ]);
      if (!status.success) throw new NovaError("internal", `btrfs send ${name}: ${err.trim()}`);
    })();
    done.catch(() => {});
    return { stream: child.stdout, done };
  }

  /**
   * Receives a `btrfs send` stream of volume `name`'s snapshot `tag` (made
   * against `parent`, which must be here) and makes it volume `name`,
   * replacing what was there; the received snapshot stays for later
   * incremental sends.
   */
  async receive(name: string, tag: string, stream: ReadableStream<Uint8Array>): Promise<Volume> {
    await this.init();
    // Received straight into .snapshots/: a read-only subvolume cannot be moved afterwards.
    const snap = this.snapshotDir(name, tag);
    await deleteSubvolume(snap);
    const child = new Deno.Command("btrfs", {
      args: ["receive", "-q", join(this.root, SNAPSHOTS)],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const err = new Response(child.stderr).text();
    try {
      await stream.pipeTo(child.stdin);
    } catch (e) {
      child.kill("SIGKILL");
      await child.status;
      await deleteSubvolume(snap).catch(() => {});
      throw e;
    }
    const status = await child.status;
    if (!status.success) {
      await deleteSubvolume(snap).catch(() => {});
      throw new NovaError("internal", `btrfs receive ${name}: ${(await err).trim()}`);
    }
    const tmp = join(this.root, `${TEMP_PREFIX}${crypto.randomUUID()}`);
    await run("btrfs", ["subvolume", "snapshot", snap, tmp]);
    if (await pathExists(this.dirOf(name))) await deleteSubvolume(this.dirOf(name));
    await Deno.rename(tmp, this.dirOf(name));
    await fsyncDir(this.root);
    return await this.info(name);
  }
}

/** Deletes a subvolume (read-only ones too); a plain directory is removed as such. */
async function deleteSubvolume(path: string): Promise<void> {
  if (!(await pathExists(path))) return;
  try {
    await run("btrfs", ["subvolume", "delete", "-c", path]);
  } catch (err) {
    if (basename(path).startsWith(TEMP_PREFIX)) {
      await Deno.remove(path, { recursive: true });
      return;
    }
    throw err;
  }
}

/** A directory's entries; none when it does not exist. */
async function* readDirOrNothing(dir: string): AsyncGenerator<Deno.DirEntry> {
  try {
    for await (const e of Deno.readDir(dir)) yield e;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
