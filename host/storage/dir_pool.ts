/**
 * The `dir` storage pool: qcow2 volumes as files in one directory, managed
 * with qemu-img. Linked clones are qcow2 overlays on a backing file, so a
 * volume that backs another cannot be deleted.
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { ConflictError, NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import { imageInfo, qemuImg } from "./qemu_img.ts";
import {
  fsyncDir,
  fsyncFile,
  pathExists,
  renameDurably,
  TEMP_PREFIX,
} from "../../core/store/mod.ts";

export interface Volume {
  name: string;
  path: string;
  virtualBytes: number;
  allocatedBytes: number;
  /** Name of the volume this one is a linked clone of, if any. */
  backing: string | null;
}

export interface PoolUsage {
  volumes: number;
  virtualBytes: number;
  allocatedBytes: number;
  freeBytes: number;
  /** Size of the filesystem the pool is on (absent from the inventory's `pool` field). */
  totalBytes?: number;
}

/**
 * What a VM's host needs of a storage backend (./dir_pool.ts, ./btrfs.ts):
 * volumes by name, made blank, from an image or as clones, with disk
 * snapshots while no QEMU writes to them.
 */
export interface VolumePool {
  /** The directory the pool keeps its volumes (and temporary files) in. */
  readonly root: string;
  init(): Promise<this>;
  /** The file QEMU opens for volume `name`. */
  pathOf(name: string): string;
  has(name: string): Promise<boolean>;
  create(name: string, sizeBytes: number): Promise<Volume>;
  cloneLinked(source: string, name: string): Promise<Volume>;
  cloneFull(source: string, name: string): Promise<Volume>;
  /** A volume whose first contents are the image file `backing`, grown to `sizeBytes`. */
  overlayOn(backing: string, format: string, name: string, sizeBytes?: number): Promise<Volume>;
  snapshot(action: "create" | "apply" | "delete", name: string, tag: string): Promise<void>;
  importFile(file: string, name: string): Promise<Volume>;
  resize(name: string, sizeBytes: number): Promise<Volume>;
  delete(name: string): Promise<void>;
  info(name: string): Promise<Volume>;
  list(): Promise<Volume[]>;
  usage(): Promise<PoolUsage>;
}

const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/;
const EXT = ".qcow2";
/** Largest volume we agree to create: 64 TiB. */
export const MAX_VOLUME_BYTES = 64 * 2 ** 40;

/**
 * Grows the qcow2 volume `name` of `pool` to `sizeBytes` (every driver keeps one qcow2 file
 * per volume); shrinking would destroy guest data and is refused.
 */
export async function growVolume(
  pool: Pick<VolumePool, "info" | "pathOf">,
  name: string,
  sizeBytes: number,
): Promise<Volume> {
  checkSize(sizeBytes);
  const current = await pool.info(name);
  if (sizeBytes < current.virtualBytes) {
    throw ValidationError.field(
      "size",
      `cannot shrink ${name} from ${current.virtualBytes} to ${sizeBytes} bytes`,
    );
  }
  if (sizeBytes > current.virtualBytes) {
    await qemuImg(["resize", "-q", pool.pathOf(name), String(sizeBytes)]);
  }
  return await pool.info(name);
}

export class DirPool implements VolumePool {
  constructor(readonly root: string) {}

  async init(): Promise<this> {
    await Deno.mkdir(this.root, { recursive: true, mode: 0o700 });
    return this;
  }

  pathOf(name: string): string {
    if (!VOLUME_NAME.test(name)) {
      throw ValidationError.field("volume", `"${name}" is not a valid volume name`);
    }
    return join(this.root, name + EXT);
  }

  async has(name: string): Promise<boolean> {
    return await pathExists(this.pathOf(name));
  }

  private async mustNotExist(name: string): Promise<void> {
    if (await this.has(name)) throw new ConflictError(`volume "${name}" already exists`);
  }

  private async mustExist(name: string): Promise<void> {
    if (!(await this.has(name))) throw new NotFoundError("volume", name);
  }

  async create(name: string, sizeBytes: number): Promise<Volume> {
    checkSize(sizeBytes);
    await this.mustNotExist(name);
    await this.fromTemplate(["create", "-q", "-f", "qcow2", "%OUT%", String(sizeBytes)], name);
    return {
      name,
      path: this.pathOf(name),
      virtualBytes: sizeBytes,
      allocatedBytes: 0,
      backing: null,
    };
  }

  /**
   * A fresh qcow2 made by `qemu-img create` is the same bytes every time for
   * the same arguments, so the first one is kept under `.templates/` and later
   * volumes are copies of it: a file copy instead of a process start on the
   * VM start path.
   */
  private async fromTemplate(createArgs: string[], name: string): Promise<void> {
    const key = createHash("sha256").update(JSON.stringify(createArgs)).digest("hex").slice(0, 32);
    const dir = join(this.root, ".templates");
    const template = join(dir, `${key}${EXT}`);
    if (!(await pathExists(template))) {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      const tmp = join(dir, `${TEMP_PREFIX}${crypto.randomUUID()}${EXT}`);
      await qemuImg(createArgs.map((a) => a === "%OUT%" ? tmp : a));
      await renameDurably(tmp, template);
    }
    const tmp = join(this.root, `${TEMP_PREFIX}${crypto.randomUUID()}${EXT}`);
    try {
      await Deno.copyFile(template, tmp);
      await renameDurably(tmp, this.pathOf(name));
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  }

  /** A qcow2 overlay on `source`: instant, shares unchanged blocks. */
  async cloneLinked(source: string, name: string): Promise<Volume> {
    await this.mustExist(source);
    await this.mustNotExist(name);
    await qemuImg([
      "create",
      "-q",
      "-f",
      "qcow2",
      "-b",
      source + EXT, // relative: the pool directory can move as a whole
      "-F",
      "qcow2",
      this.pathOf(name),
    ]);
    await this.syncCreated(name);
    return await this.info(name);
  }

  /** qemu-img writes in place without fsync: a crash must not lose a volume the cluster was told of. */
  private async syncCreated(name: string): Promise<void> {
    await fsyncFile(this.pathOf(name));
    await fsyncDir(this.root);
  }

  /**
   * A qcow2 overlay on a file outside the pool (an image blob, which is
   * immutable because it is content-addressed), grown to `sizeBytes`.
   */
  async overlayOn(
    backing: string,
    format: string,
    name: string,
    sizeBytes?: number,
  ): Promise<Volume> {
    if (sizeBytes !== undefined) checkSize(sizeBytes);
    await this.mustNotExist(name);
    const args = ["create", "-q", "-f", "qcow2", "-b", backing, "-F", format, this.pathOf(name)];
    if (sizeBytes !== undefined) args.push(String(sizeBytes));
    await qemuImg(args);
    await this.syncCreated(name);
    return await this.info(name);
  }

  /** Internal qcow2 snapshots of a volume that no QEMU has open. */
  async snapshot(action: "create" | "apply" | "delete", name: string, tag: string): Promise<void> {
    await this.mustExist(name);
    const flag = { create: "-c", apply: "-a", delete: "-d" }[action];
    await qemuImg(["snapshot", flag, tag, this.pathOf(name)]);
  }

  /** An independent copy (backing chain flattened). */
  async cloneFull(source: string, name: string): Promise<Volume> {
    await this.mustExist(source);
    await this.mustNotExist(name);
    await this.convertInto(this.pathOf(source), name);
    return await this.info(name);
  }

  /** Copies an outside image (any format qemu-img reads) into the pool as qcow2. */
  async importFile(file: string, name: string): Promise<Volume> {
    await this.mustNotExist(name);
    await this.convertInto(file, name);
    return await this.info(name);
  }

  private async convertInto(src: string, name: string): Promise<void> {
    // Convert to a temporary name, then rename: a crash never leaves a half-written volume.
    const tmp = join(this.root, `${TEMP_PREFIX}${crypto.randomUUID()}${EXT}`);
    try {
      await qemuImg(["convert", "-q", "-O", "qcow2", src, tmp], 3_600_000);
      await renameDurably(tmp, this.pathOf(name));
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  }

  /** Grows a volume; shrinking would destroy guest data and is refused. */
  async resize(name: string, sizeBytes: number): Promise<Volume> {
    return await growVolume(this, name, sizeBytes);
  }

  async delete(name: string): Promise<void> {
    await this.mustExist(name);
    const dependents = await this.dependentsOf(name);
    if (dependents.length) {
      throw new ConflictError(`volume "${name}" backs linked clones: ${dependents.join(", ")}`, {
        dependents,
      });
    }
    await Deno.remove(this.pathOf(name));
  }

  /** Volumes whose backing file is `name`. */
  private async dependentsOf(name: string): Promise<string[]> {
    return (await this.list()).filter((v) => v.backing === name).map((v) => v.name);
  }

  async info(name: string): Promise<Volume> {
    const path = this.pathOf(name);
    await this.mustExist(name);
    const info = await imageInfo(path);
    const backingFile = info["backing-filename"];
    return {
      name,
      path,
      virtualBytes: info["virtual-size"],
      allocatedBytes: info["actual-size"] ?? (await Deno.stat(path)).size,
      backing: backingFile ? volumeNameOf(backingFile) : null,
    };
  }

  /**
   * Every volume, read from the qcow2 headers and file metadata rather than
   * one `qemu-img info` process per volume: deletion (which checks for
   * dependents) and inventory usage stay cheap when the pool holds many.
   */
  async list(): Promise<Volume[]> {
    const out: Volume[] = [];
    for await (const e of Deno.readDir(this.root)) {
      if (!e.isFile || !e.name.endsWith(EXT) || e.name.startsWith(TEMP_PREFIX)) continue;
      const path = join(this.root, e.name);
      const read = await headerAndStat(path);
      if (!read) continue;
      const { header, st } = read;
      out.push({
        name: e.name.slice(0, -EXT.length),
        path,
        virtualBytes: header.virtualBytes,
        allocatedBytes: (st.blocks ?? 0) * 512 || st.size,
        backing: header.backing ? volumeNameOf(header.backing) : null,
      });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** What the node reports in its inventory. */
  async usage(): Promise<PoolUsage> {
    return poolUsage(await this.list(), this.root);
  }
}

/**
 * A volume's header and metadata, or null when it is not qcow2 or was
 * deleted after the directory was read: deletions run concurrently (another
 * VM's reconcile), and one gone file must not fail every listing.
 */
async function headerAndStat(
  path: string,
): Promise<{ header: { virtualBytes: number; backing: string | null }; st: Deno.FileInfo } | null> {
  try {
    const header = await readQcow2Header(path);
    return header ? { header, st: await Deno.stat(path) } : null;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** A backing file path as the volume (or blob) name it refers to. */
function volumeNameOf(backingFile: string): string {
  return backingFile.replace(/^.*\//, "").replace(/\.qcow2$/, "");
}

/**
 * The fields of a qcow2 header the pool needs (QEMU's qcow2 spec: big-endian,
 * backing file offset at 8 and size at 16, virtual size at 24); null when the
 * file is not qcow2.
 */
export async function readQcow2Header(
  path: string,
): Promise<{ virtualBytes: number; backing: string | null } | null> {
  const f = await Deno.open(path);
  try {
    const header = new Uint8Array(32);
    if ((await f.read(header)) !== 32) return null;
    const view = new DataView(header.buffer);
    if (view.getUint32(0) !== 0x514649fb) return null; // "QFI\xfb"
    const virtualBytes = Number(view.getBigUint64(24));
    const offset = Number(view.getBigUint64(8));
    const size = view.getUint32(16);
    if (!offset || !size) return { virtualBytes, backing: null };
    const name = new Uint8Array(size);
    await f.seek(offset, Deno.SeekMode.Start);
    if ((await f.read(name)) !== size) return null;
    return { virtualBytes, backing: new TextDecoder().decode(name) };
  } finally {
    f.close();
  }
}

export function checkSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1024 * 1024) {
    throw ValidationError.field("size", "must be at least 1 MiB");
  }
  if (sizeBytes > MAX_VOLUME_BYTES) throw ValidationError.field("size", "must be at most 64 TiB");
  if (sizeBytes % 512 !== 0) throw ValidationError.field("size", "must be a multiple of 512 bytes");
}

/** Size and free space of the filesystem holding `dir` (`df`; zeros when it cannot tell). */
export async function fsStats(dir: string): Promise<{ totalBytes: number; freeBytes: number }> {
  const out = await new Deno.Command("df", { args: ["-Pk", dir], stdout: "piped", stderr: "null" })
    .output();
  const cols = new TextDecoder().decode(out.stdout).trim().split("\n").pop()?.split(/\s+/) ?? [];
  const kib = (i: number) => Number.isFinite(Number(cols[i])) ? Number(cols[i]) * 1024 : 0;
  return { totalBytes: kib(1), freeBytes: kib(3) };
}

/** A pool's usage: its volumes' sizes summed, and the free and total space of the filesystem at `root`. */
export async function poolUsage(
  vols: { virtualBytes: number; allocatedBytes: number }[],
  root: string,
): Promise<PoolUsage> {
  const fs = await fsStats(root);
  return {
    volumes: vols.length,
    virtualBytes: vols.reduce((n, v) => n + v.virtualBytes, 0),
    allocatedBytes: vols.reduce((n, v) => n + v.allocatedBytes, 0),
    freeBytes: fs.freeBytes,
    totalBytes: fs.totalBytes,
  };
}
