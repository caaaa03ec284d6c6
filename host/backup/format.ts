/**
 * The on-target format of backups: each VM's backups live in `TARGET/VM/`, one
 * self-describing chain per full backup and its incrementals:
 *
 * - `ID.DISK.qcow2`: the disk's backup; an incremental one is a qcow2 overlay
 *   whose backing file is the parent backup's file of the same disk (a
 *   relative name, so a chain can be moved or mounted elsewhere);
 * - `ID.manifest.json`: {@link Manifest}: the VM, its disks, the chain, sizes,
 *   time, and the sha256 of each file as a whole and of each 64 KiB block;
 * - `ID.SHA256SUMS`: the files' sha256s in `sha256sum -c` format.
 *
 * The cluster's index (core/fsm/backups.ts) holds each manifest's sha256, so a
 * manifest that changed behind its back is refused with a clear error.
 *
 * @module
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { NovaError, ValidationError } from "../../core/errors/mod.ts";
import { writeFileDurably } from "../../core/store/mod.ts";
import type { BackupRecord } from "../../core/fsm/mod.ts";

/** The format tag every manifest carries. */
export const MANIFEST_FORMAT = "novactl-backup/1";
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
  sha256: string;
  blockBytes: number;
  /** sha256 (hex) of each `blockBytes` block of the file, in order. */
  blocks: string[];
}

/** What `ID.manifest.json` holds. */
export interface Manifest {
  format: typeof MANIFEST_FORMAT;
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
  sums: (id: string) => `${id}.SHA256SUMS`,
};

/** Checksums of a file: its sha256 and one per block. */
export interface FileSums {
  bytes: number;
  sha256: string;
  blocks: string[];
}

/**
 * Files up to this size are hashed whole and per block in one pass here: starting a worker
 * costs more than the second hash of so few bytes.
 */
const INLINE_BYTES = 64 * 2 ** 20;

/**
 * Hashes `path` per block here and, at the same time, whole in a worker (a second core: the
 * two hashes together are what a backup adds to the copy), or both here for a small file;
 * `onBytes` sees progress.
 */
export async function checksumFile(
  path: string,
  opts: {
    signal?: AbortSignal;
    onBytes?: (n: number) => void;
    /** Hash in one pass here up to this size (tests); {@link INLINE_BYTES} unless set. */
    inlineBytes?: number;
  } = {},
): Promise<FileSums> {
  const size = (await Deno.stat(path)).size;
  const whole = size <= (opts.inlineBytes ?? INLINE_BYTES)
    ? { digest: Promise.resolve(""), inline: true, stop: () => {} }
    : wholeSha256(path, opts.signal);
  try {
    const blocks = await blockSums(path, opts, whole.inline);
    return {
      bytes: blocks.bytes,
      sha256: blocks.sha256 ?? await whole.digest,
      blocks: blocks.blocks,
    };
  } finally {
    whole.stop();
  }
}

/** The worker's source: reads the file itself (from the page cache, mostly) and hashes it. */
const WORKER_SOURCE = `
import { createHash } from "node:crypto";
self.onmessage = async (e) => {
  try {
    const h = createHash("sha256");
    const f = await Deno.open(e.data, { read: true });
    const buf = new Uint8Array(4 << 20);
    try {
      for (;;) {
        const n = await f.read(buf);
        if (n === null) break;
        h.update(buf.subarray(0, n));
      }
    } finally {
      f.close();
    }
    self.postMessage({ sha256: h.digest("hex") });
  } catch (err) {
    self.postMessage({ error: String(err) });
  }
};`;

/**
 * The whole-file sha256 from a worker; `inline` is set when no worker could be started (the
 * caller then hashes the file whole itself, as it reads it).
 */
function wholeSha256(
  path: string,
  signal?: AbortSignal,
): { digest: Promise<string>; inline: boolean; stop(): void } {
  let worker: Worker;
  try {
    const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    worker = new Worker(url, { type: "module" });
    URL.revokeObjectURL(url);
  } catch {
    return { digest: Promise.resolve(""), inline: true, stop: () => {} };
  }
  const digest = new Promise<string>((resolve, reject) => {
    worker.onmessage = (e) =>
      e.data.error ? reject(new Error(`hashing ${path}: ${e.data.error}`)) : resolve(e.data.sha256);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`hashing ${path}: ${e.message}`));
    };
    signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
  digest.catch(() => {}); // awaited by the caller, or dropped with its error
  worker.postMessage(path);
  return { digest, inline: false, stop: () => worker.terminate() };
}

/** Reads `path` in large chunks, hashing each block (and, `inline`, the whole file too). */
async function blockSums(
  path: string,
  opts: { signal?: AbortSignal; onBytes?: (n: number) => void },
  inline: boolean,
): Promise<{ bytes: number; sha256: string | null; blocks: string[] }> {
  const whole = inline ? createHash("sha256") : null;
  const blocks: string[] = [];
  const chunk = new Uint8Array(64 * BLOCK_BYTES);
  let bytes = 0;
  const f = await Deno.open(path, { read: true });
  try {
    for (;;) {
      opts.signal?.throwIfAborted();
      // Fill the chunk (short reads happen), so blocks line up at BLOCK_BYTES.
      let got = 0;
      while (got < chunk.length) {
        const n = await f.read(chunk.subarray(got));
        if (n === null) break;
        got += n;
      }
      if (!got) break;
      const data = chunk.subarray(0, got);
      whole?.update(data);
      for (let off = 0; off < got; off += BLOCK_BYTES) {
        blocks.push(
          createHash("sha256").update(data.subarray(off, Math.min(got, off + BLOCK_BYTES)))
            .digest("hex"),
        );
      }
      bytes += got;
      opts.onBytes?.(got);
      if (got < chunk.length) break;
    }
  } finally {
    f.close();
  }
  return { bytes, sha256: whole ? whole.digest("hex") : null, blocks };
}

/** Writes the manifest and the SHA256SUMS file durably; returns the manifest's sha256. */
export async function writeManifest(dir: string, m: Manifest): Promise<string> {
  const text = JSON.stringify(m) + "\n";
  await writeFileDurably(
    join(dir, layout.sums(m.id)),
    m.disks.map((d) => `${d.sha256}  ${d.file}\n`).join(""),
  );
  await writeFileDurably(join(dir, layout.manifest(m.id)), text);
  return createHash("sha256").update(text).digest("hex");
}

/**
 * Reads and checks the manifest of `b` in `targetPath`: present, the sha256 the
 * cluster recorded, valid JSON of this format and about this backup.
 * @throws ValidationError naming the backup and what is wrong with its manifest.
 */
export async function readManifest(targetPath: string, b: BackupRecord): Promise<Manifest> {
  const path = join(targetPath, b.dir, b.manifest);
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
  let m: Manifest;
  try {
    m = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw corrupt(b, `manifest ${path} is not valid JSON`);
  }
  if (m?.format !== MANIFEST_FORMAT || m.id !== b.id || !Array.isArray(m.disks)) {
    throw corrupt(b, `manifest ${path} is not a ${MANIFEST_FORMAT} manifest of ${b.id}`);
  }
  return m;
}

function corrupt(b: BackupRecord, what: string): ValidationError {
  return new ValidationError(`backup ${b.id}: ${what}; nothing was restored`, [
    { field: "backup", message: what },
  ]);
}

/** Reads every manifest of a chain (the full backup first) and checks its files are there. */
export async function readChain(targetPath: string, chain: BackupRecord[]): Promise<Manifest[]> {
  const out: Manifest[] = [];
  for (const b of chain) {
    const m = await readManifest(targetPath, b);
    for (const d of m.disks) {
      const p = join(targetPath, b.dir, d.file);
      const st = await Deno.stat(p).catch(() => null);
      if (!st) throw corrupt(b, `file ${p} is missing`);
      if (st.size !== d.fileBytes) {
        throw corrupt(b, `file ${p} has ${st.size} bytes, its manifest says ${d.fileBytes}`);
      }
    }
    out.push(m);
  }
  return out;
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
 * Re-reads every file of backup `b` and checks each block's sha256 and the
 * file's, against its manifest (itself checked against the recorded sha256).
 */
export async function verifyBackup(
  targetPath: string,
  b: BackupRecord,
  opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
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
    const sums = await checksumFile(path, {
      signal: opts.signal,
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
    if (sums.sha256 !== d.sha256 || sums.bytes !== d.fileBytes) report.badFiles.push(d.file);
  }
  return report;
}
