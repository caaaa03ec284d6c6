/**
 * The on-target format of backups: each VM's backups live in `TARGET/VM/`, one
 * self-describing chain per full backup and its incrementals:
 *
 * - `ID.DISK.qcow2`: the disk's backup; an incremental one is a qcow2 overlay
 *   whose backing file is the parent backup's file of the same disk (a
 *   relative name, so a chain can be moved or mounted elsewhere);
 * - `ID.manifest.json`: {@link Manifest}: the VM, its disks, the chain, sizes,
 *   time, the sha256 of each 64 KiB block of each file, and the digest of that
 *   block list (the file's as a whole, without hashing it twice).
 *
 * Backups of format 1 (`novactl-backup/1`) also carry each file's whole sha256
 * and an `ID.SHA256SUMS`; they are still read, restored and verified (by their
 * blocks, which cover every byte).
 *
 * The cluster's index (core/fsm/backups.ts) holds each manifest's sha256, so a
 * manifest that changed behind its back is refused with a clear error.
 *
 * @module
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { NovaError, ValidationError } from "../../core/errors/mod.ts";
import { renameDurably, writeFileDurably, writeSyncedTemp } from "../../core/store/mod.ts";
import type { BackupRecord } from "../../core/fsm/mod.ts";
import { BlockHasher } from "./block_hasher.ts";

/** The format tag every new manifest carries. */
export const MANIFEST_FORMAT = "novactl-backup/2";
/** The formats this version reads: 1 had a whole-file sha256 per disk, and SHA256SUMS. */
const READABLE_FORMATS: readonly string[] = ["novactl-backup/1", MANIFEST_FORMAT];
/** Bytes per checksummed block. */
export const BLOCK_BYTES = 64 * 1024;

/** One disk in a manifest. */
export interface ManifestDisk {
  id: string;
  file: string;
  /** The parent backup's file this one is an overlay of (null: self-contained). */
  backing: string | null;
  virtualBytes: number;
  fileBytes: number;
  copiedBytes: number;
  /** {@link blockListSha256} of `blocks` (format 2). */
  blocksSha256?: string;
  /** The whole file's sha256 (format 1 only). */
  sha256?: string;
  blockBytes: number;
  /** sha256 (hex) of each `blockBytes` block of the file, in order. */
  blocks: string[];
}

/** What `ID.manifest.json` holds. */
export interface Manifest {
  format: string;
  id: string;
  vm: string;
  vmUuid: string;
  kind: "full" | "incremental";
  parent: string | null;
  chain: string;
  createdAt: string;
  node: string;
  /** What a restore as a new VM needs to run it like the original. */
  spec: { image: string; cpus: number; memoryMiB: number };
  /** Whether the guest's filesystems were frozen at the point in time, and for how long. */
  fsFrozen: boolean;
  freezeMs: number | null;
  fullReason: string | null;
  disks: ManifestDisk[];
}

/** Names inside a chain directory. */
export const layout = {
  dir: (vm: string) => vm,
  file: (id: string, disk: string) => `${id}.${disk}.qcow2`,
  manifest: (id: string) => `${id}.manifest.json`,
  /** Format 1's `sha256sum -c` file (removed with its backup). */
  sums: (id: string) => `${id}.SHA256SUMS`,
};

/** Checksums of a file: one sha256 per block, and the digest of that list. */
export interface FileSums {
  bytes: number;
  blocks: string[];
  /** {@link blockListSha256} of `blocks`. */
  blocksSha256: string;
}

/**
 * The digest that names a file's content as a whole: the sha256 of its block list, each
 * block's hex sha256 followed by a newline, in order. Derived from the per-block hashes, so
 * the file is read and hashed once; offline, `split -b 65536 --filter=sha256sum FILE | cut
 * -c1-64 | sha256sum` gives the same (README).
 */
export function blockListSha256(blocks: string[]): string {
  const h = createHash("sha256");
  for (const b of blocks) h.update(b + "\n");
  return h.digest("hex");
}

/** Bytes read and hashed per step: 64 blocks. */
const CHUNK_BYTES = 64 * BLOCK_BYTES;

/**
 * Files up to this size are hashed here alone: starting a worker (30–40 ms here, most of
 * it compiling its module) costs more than hashing half of so few bytes (32 MiB: ~33 ms
 * alone, 32–67 ms with a new worker).
 */
const INLINE_BYTES = 64 * 2 ** 20;

/**
 * Hashes every block of `path` once, on two cores: this thread and a worker take 4 MiB
 * chunks from one shared counter (so a core busy with something else does less of it).
 * The worker is `opts.hasher`'s, already started, whatever the file's size; without one, a
 * worker is started for this file only if it is bigger than {@link INLINE_BYTES} (else this
 * thread hashes it alone). `onBytes` sees progress.
 */
export async function checksumFile(
  path: string,
  opts: {
    signal?: AbortSignal;
    onBytes?: (n: number) => void;
    /** A worker started ahead of need (left running: the caller closes it). */
    hasher?: BlockHasher;
    /** Hash here alone up to this size (tests); {@link INLINE_BYTES} unless set. */
    inlineBytes?: number;
    /** Leave every chunk to the worker (tests: the worker's path alone). */
    workerOnly?: boolean;
  } = {},
): Promise<FileSums> {
  const size = (await Deno.stat(path)).size;
  const chunks = Math.ceil(size / CHUNK_BYTES);
  const next = new Int32Array(new SharedArrayBuffer(4));
  const byChunk: string[][] = new Array(chunks);
  const own = !opts.hasher && size > (opts.inlineBytes ?? INLINE_BYTES)
    ? BlockHasher.start()
    : null;
  const hasher = opts.hasher ?? own;
  const helper = hasher?.hash(path, size, CHUNK_BYTES, BLOCK_BYTES, next, (i, hashes, n) => {
    byChunk[i] = hashes;
    opts.onBytes?.(n);
  }, opts.signal) ?? null;
  const hashHere = async () => {
    const f = await Deno.open(path, { read: true });
    try {
      const buf = new Uint8Array(CHUNK_BYTES);
      for (;;) {
        opts.signal?.throwIfAborted();
        const i = Atomics.add(next, 0, 1);
        if (i >= chunks) break;
        const n = await readChunk(f, buf, i, size);
        byChunk[i] = hashBlocks(buf.subarray(0, n));
        opts.onBytes?.(n);
      }
    } finally {
      f.close();
    }
  };
  try {
    if (opts.workerOnly !== true || !helper) await hashHere();
    await helper?.done;
  } catch (err) {
    hasher?.close(); // its job may still run: no later file may share the counter with it
    throw err;
  } finally {
    own?.close();
  }
  const blocks = byChunk.flat();
  if (blocks.length !== Math.ceil(size / BLOCK_BYTES)) {
    throw new Error(`hashing ${path}: ${blocks.length} blocks hashed of ${size} bytes`);
  }
  return { bytes: size, blocks, blocksSha256: blockListSha256(blocks) };
}

/** Reads chunk `i` of a `size`-byte file into `buf` (short reads happen); returns its length. */
async function readChunk(f: Deno.FsFile, buf: Uint8Array, i: number, size: number) {
  const want = Math.min(CHUNK_BYTES, size - i * CHUNK_BYTES);
  await f.seek(i * CHUNK_BYTES, Deno.SeekMode.Start);
  let got = 0;
  while (got < want) {
    const n = await f.read(buf.subarray(got, want));
    if (n === null) throw new Error(`the file ended at ${i * CHUNK_BYTES + got} of ${size} bytes`);
    got += n;
  }
  return want;
}

function hashBlocks(data: Uint8Array): string[] {
  const out: string[] = [];
  for (let off = 0; off < data.length; off += BLOCK_BYTES) {
    out.push(createHash("sha256").update(data.subarray(off, off + BLOCK_BYTES)).digest("hex"));
  }
  return out;
}

/** Writes the manifest durably; returns its sha256. */
export async function writeManifest(dir: string, m: Manifest): Promise<string> {
  const text = JSON.stringify(m) + "\n";
  await writeFileDurably(join(dir, layout.manifest(m.id)), text);
  return createHash("sha256").update(text).digest("hex");
}

/** A manifest written and synced under a temporary name, not yet under its own. */
export interface StagedManifest {
  sha256: string;
  /** Renames it to its name, durably (the directory synced). */
  commit(): Promise<void>;
  /** Removes the temporary file. */
  discard(): Promise<void>;
}

/**
 * Writes and syncs the manifest under a temporary name (`.tmp-ID.manifest.json-…`, which
 * the clean-up of an interrupted backup removes), so that this can overlap the syncing of the files
 * it names; {@link StagedManifest.commit} gives it its name only once they are on disk.
 */
export async function stageManifest(dir: string, m: Manifest): Promise<StagedManifest> {
  const text = JSON.stringify(m) + "\n";
  const final = join(dir, layout.manifest(m.id));
  const tmp = await writeSyncedTemp(final, text);
  return {
    sha256: createHash("sha256").update(text).digest("hex"),
    commit: () => renameDurably(tmp, final, { synced: true }),
    discard: () => Deno.remove(tmp).catch(() => {}),
  };
}

/**
 * Reads and checks the manifest of `b` in `targetPath`: present, the sha256 the
 * cluster recorded, valid JSON of this format and about this backup.
 * @throws ValidationError naming the backup and what is wrong with its manifest.
 */
export async function readManifest(targetPath: string, b: BackupRecord): Promise<Manifest> {
  const path = join(targetPath, b.dir, b.manifest);
  const bytes = await readRecordedManifest(path, b);
  let m: Manifest;
  try {
    m = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw corrupt(b, `manifest ${path} is not valid JSON`);
  }
  if (!READABLE_FORMATS.includes(m?.format) || m.id !== b.id || !Array.isArray(m.disks)) {
    throw corrupt(
      b,
      `manifest ${path} is not a manifest of ${b.id} in a known format (${
        READABLE_FORMATS.join(", ")
      })`,
    );
  }
  return m;
}

/** The manifest's bytes, once they are the ones the cluster recorded (its sha256). */
async function readRecordedManifest(path: string, b: BackupRecord): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw corrupt(b, `manifest ${path} cannot be read (${(err as Error).message})`);
  }
  const sha = createHash("sha256").update(bytes).digest("hex");
  if (sha !== b.manifestSha256) {
    throw corrupt(
      b,
      `manifest ${path} is corrupt or was changed: sha256 ${sha.slice(0, 12)}…, recorded ${
        b.manifestSha256.slice(0, 12)
      }…`,
    );
  }
  return bytes;
}

function corrupt(b: BackupRecord, what: string): ValidationError {
  return new ValidationError(`backup ${b.id}: ${what}; nothing was restored`, [
    { field: "backup", message: what },
  ]);
}

/**
 * Checks a chain (the full backup first) as {@link checkChain} does and reads its newest
 * manifest, the one a restore needs (the others are only checked: a full backup's lists
 * 16,384 block sums per GiB, and parsing it cost more than the rest of the check).
 * @throws ValidationError naming the backup and what is missing or changed.
 */
export async function readChainTop(targetPath: string, chain: BackupRecord[]): Promise<Manifest> {
  const top = chain[chain.length - 1];
  await checkChain(targetPath, chain.slice(0, -1));
  const m = await readManifest(targetPath, top);
  await checkFiles(targetPath, top);
  return m;
}

/**
 * Checks that a chain is still there as recorded, without parsing its manifests: each
 * manifest has the sha256 the cluster recorded (so it is the manifest written then, which
 * names the files the record does), and each file has the size recorded.
 * @throws ValidationError naming the backup and what is missing or changed.
 */
export async function checkChain(targetPath: string, chain: BackupRecord[]): Promise<void> {
  for (const b of chain) {
    await readRecordedManifest(join(targetPath, b.dir, b.manifest), b);
    await checkFiles(targetPath, b);
  }
}

/** Checks that each file of `b` is there with the size recorded. */
async function checkFiles(targetPath: string, b: BackupRecord): Promise<void> {
  for (const d of b.disks) {
    const path = join(targetPath, b.dir, d.file);
    const st = await Deno.stat(path).catch(() => null);
    if (!st) throw corrupt(b, `file ${path} is missing`);
    if (st.size !== d.fileBytes) {
      throw corrupt(b, `file ${path} has ${st.size} bytes, its manifest says ${d.fileBytes}`);
    }
  }
}

/** A block whose checksum does not match. */
export interface BadBlock {
  file: string;
  index: number;
  offset: number;
}

/** What a verify found. */
export interface VerifyReport {
  backup: string;
  files: number;
  bytes: number;
  blocks: number;
  badBlocks: BadBlock[];
  badFiles: string[];
}

/**
 * Re-reads every file of backup `b` and checks each block's sha256, the file's size and its
 * block list's digest against its manifest (itself checked against the recorded sha256).
 * Every byte is in one block, so any changed byte is found, and where.
 */
export async function verifyBackup(
  targetPath: string,
  b: BackupRecord,
  opts: {
    signal?: AbortSignal;
    onProgress?: (done: number, total: number) => void;
    /** A hashing worker to use (left running); else one per file over 64 MiB. */
    hasher?: BlockHasher;
  } = {},
): Promise<VerifyReport> {
  const m = await readManifest(targetPath, b);
  const total = m.disks.reduce((n, d) => n + d.fileBytes, 0);
  let done = 0;
  const report: VerifyReport = {
    backup: b.id,
    files: m.disks.length,
    bytes: 0,
    blocks: 0,
    badBlocks: [],
    badFiles: [],
  };
  for (const d of m.disks) {
    const path = join(targetPath, b.dir, d.file);
    if (d.blockBytes !== BLOCK_BYTES) {
      throw new NovaError(
        "validation",
        `backup ${b.id}: ${d.file} has blocks of ${d.blockBytes} bytes, not ${BLOCK_BYTES}`,
      );
    }
    const sums = await checksumFile(path, {
      signal: opts.signal,
      hasher: opts.hasher,
      onBytes: (n) => opts.onProgress?.(done += n, total),
    }).catch((err) => {
      if (opts.signal?.aborted) throw err;
      throw new NovaError("validation", `backup ${b.id}: cannot read ${path}: ${err.message}`);
    });
    report.bytes += sums.bytes;
    report.blocks += sums.blocks.length;
    const n = Math.max(sums.blocks.length, d.blocks.length);
    for (let i = 0; i < n; i++) {
      if (sums.blocks[i] !== d.blocks[i]) {
        report.badBlocks.push({ file: d.file, index: i, offset: i * d.blockBytes });
      }
    }
    const listBad = d.blocksSha256 !== undefined && sums.blocksSha256 !== d.blocksSha256;
    if (listBad || sums.bytes !== d.fileBytes || report.badBlocks.some((x) => x.file === d.file)) {
      report.badFiles.push(d.file);
    }
  }
  return report;
}
