/**
 * Content-addressed files (image kernels, initrds, disks) on one host:
 * `ROOT/<sha256>`. Every file is hashed while it is written and only renamed
 * into place when the hash matches, so a present blob is always a verified one.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import {
  ConflictError,
  NotFoundError,
  PayloadTooLargeError,
  UnavailableError,
  ValidationError,
} from "../../core/errors/mod.ts";
import { renameDurably, TEMP_PREFIX, writeAll } from "../../core/store/mod.ts";
import { isQcow2, probeDiskImage, qcow2HeaderProblem } from "./disk_probe.ts";

const SHA256 = /^[0-9a-f]{64}$/;
/** A peer fetch that makes no progress (no headers, no bytes) for this long is given up. */
const FETCH_STALL_MS = 30_000;
/** However steady, a blob fetch ends after this. */
const FETCH_MAX_MS = 3_600_000;

/**
 * Aborts `signal` once no byte passed through `meter` for `ms` (nor, before
 * the first, since the start): a stalled peer is left for the next one instead
 * of holding a VM's start for the whole fetch timeout.
 */
function stallGuard(ms: number) {
  const ctl = new AbortController();
  let timer = setTimeout(() => ctl.abort(), ms);
  const meter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, out) {
      clearTimeout(timer);
      timer = setTimeout(() => ctl.abort(), ms);
      out.enqueue(chunk);
    },
  });
  return { signal: ctl.signal, meter, stop: () => clearTimeout(timer) };
}

export interface BlobInfo {
  sha256: string;
  size: number;
}

/** Options of {@link BlobStore.put}. */
export interface PutOptions {
  /**
   * Refuse the stream (413, PayloadTooLargeError) as soon as it passes this
   * many bytes; the partial file is deleted.
   */
  maxBytes?: number;
  /**
   * Inspects the complete, hash-verified file before it is put in place
   * (e.g. a qcow2 safety probe); a throw discards it. The file is never
   * visible under its hash unless the check passed.
   */
  check?: (tmpPath: string) => Promise<void>;
}

export class BlobStore {
  constructor(readonly root: string) {}

  async init(): Promise<this> {
    await Deno.mkdir(this.root, { recursive: true, mode: 0o700 });
    return this;
  }

  path(sha256: string): string {
    if (!SHA256.test(sha256)) {
      throw ValidationError.field("sha256", "must be 64 lowercase hex digits");
    }
    return join(this.root, sha256);
  }

  async stat(sha256: string): Promise<BlobInfo | null> {
    try {
      const st = await Deno.stat(this.path(sha256));
      return { sha256, size: st.size };
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
  }

  /**
   * Stores a stream. With `expected`, a mismatching hash is refused and
   * nothing is kept; without it, the blob is named by the hash it has.
   */
  async put(
    body: ReadableStream<Uint8Array>,
    expected?: string,
    opts: PutOptions = {},
  ): Promise<BlobInfo> {
    if (expected !== undefined) this.path(expected);
    const tmp = join(this.root, `${TEMP_PREFIX}${crypto.randomUUID()}`);
    const hash = createHash("sha256");
    let size = 0;
    const max = opts.maxBytes ?? Infinity;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      for await (const chunk of body) {
        size += chunk.length;
        // Checked before writing: the disk never holds more than the cap.
        if (size > max) throw new PayloadTooLargeError(max);
        hash.update(chunk);
        await writeAll(file, chunk);
      }
      await file.sync();
    } catch (err) {
      file.close();
      await Deno.remove(tmp).catch(() => {});
      // Stop the sender's stream too (an unread request body is not left half-consumed).
      await body.cancel().catch(() => {});
      throw err;
    }
    file.close();
    const sha256 = hash.digest("hex");
    try {
      if (expected !== undefined && sha256 !== expected) {
        throw new ConflictError(`checksum mismatch: expected ${expected}, got ${sha256}`, {
          expected,
          actual: sha256,
        });
      }
      await opts.check?.(tmp);
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
    await renameDurably(tmp, this.path(sha256), { synced: true });
    return { sha256, size };
  }

  /** Makes a blob present, fetching it from the first peer that has it (verified by hash). */
  async ensure(
    sha256: string,
    sources: { url: string; fetch: (url: string, init?: RequestInit) => Promise<Response> }[],
    opts: { stallMs?: number } = {},
  ): Promise<BlobInfo> {
    const stallMs = opts.stallMs ?? FETCH_STALL_MS;
    const have = await this.stat(sha256);
    if (have) return have;
    const errors: string[] = [];
    for (const src of sources) {
      const progress = stallGuard(stallMs);
      try {
        const res = await src.fetch(`${src.url}/internal/blobs/${sha256}`, {
          signal: AbortSignal.any([progress.signal, AbortSignal.timeout(FETCH_MAX_MS)]),
        });
        if (!res.ok || !res.body) {
          await res.body?.cancel();
          errors.push(`${src.url}: HTTP ${res.status}`);
          continue;
        }
        return await this.put(res.body.pipeThrough(progress.meter), sha256);
      } catch (err) {
        const why = progress.signal.aborted ? `no data for ${stallMs} ms` : (err as Error).message;
        errors.push(`${src.url}: ${why}`);
      } finally {
        progress.stop();
      }
    }
    if (!sources.length) throw new NotFoundError("blob", sha256);
    throw new UnavailableError(
      `cannot fetch blob ${sha256.slice(0, 12)} from any peer: ${errors.join("; ")}`,
    );
  }

  /** Hashes of the blobs present (temporary files of unfinished uploads are not blobs). */
  async list(): Promise<string[]> {
    const out: string[] = [];
    for await (const e of Deno.readDir(this.root)) {
      if (e.isFile && SHA256.test(e.name)) out.push(e.name);
    }
    return out.sort();
  }

  async open(sha256: string): Promise<Deno.FsFile> {
    try {
      return await Deno.open(this.path(sha256), { read: true });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) throw new NotFoundError("blob", sha256);
      throw err;
    }
  }

  /**
   * Checks an upload before it is kept: a qcow2 (asked for with `disk`, or
   * found by its magic whatever the uploader claimed) must be self-contained.
   * Returns the disk's virtual size when it is one. Use as {@link PutOptions.check}.
   */
  static async checkUpload(tmpPath: string, disk: boolean): Promise<number | undefined> {
    if (!disk && !(await isQcow2(tmpPath))) return undefined;
    return (await probeDiskImage(tmpPath)).virtualBytes;
  }

  /**
   * Refuses a present blob as a VM's disk image when it names other host files
   * (backing or external data file): a blob stored before uploads were checked,
   * or one a peer holds that was never checked, never reaches QEMU.
   */
  async assertSafeDisk(sha256: string): Promise<void> {
    const problem = await qcow2HeaderProblem(this.path(sha256));
    if (problem) {
      throw ValidationError.field("disk", `image disk ${sha256.slice(0, 12)} refused: ${problem}`);
    }
  }

  async remove(sha256: string): Promise<void> {
    await Deno.remove(this.path(sha256)).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }
}
