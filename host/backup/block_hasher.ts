/**
 * A second thread that hashes 64 KiB blocks of files, started ahead of need and
 * kept warm between backups ({@link HasherPool}): a worker costs 30–40 ms to start
 * here (8–11 ms of it on the starting thread, the rest compiling its module), which
 * a backup would otherwise spend on its own path, and which makes a second thread
 * worth having for small files too (an incremental backup's 32 MiB: ~25–35 ms alone).
 * One file at a time; chunks are taken from a counter shared with the caller's
 * thread (host/backup/format.ts's checksumFile), so the two share the file.
 *
 * @module
 */

/**
 * The worker's source: take a chunk index from the shared counter, read it, hash each of
 * its blocks, post the hashes back at once; for each file it is asked to hash.
 */
const WORKER_SOURCE = `
import { createHash } from "node:crypto";
self.onmessage = (e) => {
  const { job, path, size, chunk, block, next } = e.data;
  try {
    const f = Deno.openSync(path, { read: true });
    const buf = new Uint8Array(chunk);
    try {
      for (;;) {
        const i = Atomics.add(next, 0, 1);
        if (i * chunk >= size) break;
        const want = Math.min(chunk, size - i * chunk);
        f.seekSync(i * chunk, Deno.SeekMode.Start);
        let got = 0;
        while (got < want) {
          const n = f.readSync(buf.subarray(got, want));
          if (n === null) throw new Error("the file ended at " + (i * chunk + got) + " of " + size + " bytes");
          got += n;
        }
        const hashes = [];
        for (let off = 0; off < want; off += block) {
          hashes.push(createHash("sha256").update(buf.subarray(off, Math.min(want, off + block))).digest("hex"));
        }
        self.postMessage({ job, i, hashes, n: want });
      }
    } finally {
      f.close();
    }
    self.postMessage({ job, done: true });
  } catch (err) {
    self.postMessage({ job, error: String(err) });
  }
};`;

/** One file's share of the worker's work. */
export interface HashJob {
  /** Resolves once the worker took its last chunk (and posted its hashes); rejects on error. */
  done: Promise<void>;
}

/** A chunk the worker hashed: its index, the hex sha256 of each block, its length. */
export type ChunkHandler = (i: number, hashes: string[], n: number) => void;

/** A hashing worker; {@link BlockHasher.close} ends it. */
export class BlockHasher {
  #worker: Worker | null;
  #jobs = 0;
  #current: {
    job: number;
    onChunk: ChunkHandler;
    resolve(): void;
    reject(err: Error): void;
  } | null = null;

  private constructor(worker: Worker | null) {
    this.#worker = worker;
    if (!worker) return;
    worker.onmessage = (e) => {
      const c = this.#current;
      if (!c || e.data.job !== c.job) return;
      if (e.data.error) c.reject(new Error(e.data.error));
      else if (e.data.done) c.resolve();
      else c.onChunk(e.data.i, e.data.hashes, e.data.n);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      this.#current?.reject(new Error(e.message));
      this.close();
    };
  }

  /** Starts the worker (it compiles in the background); a hasher without one if it cannot. */
  static start(): BlockHasher {
    try {
      const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
      const worker = new Worker(url, { type: "module" });
      URL.revokeObjectURL(url);
      return new BlockHasher(worker);
    } catch {
      return new BlockHasher(null);
    }
  }

  /** Whether it has a worker (false once closed, or if none could be started). */
  get alive(): boolean {
    return this.#worker !== null;
  }

  /**
   * Has the worker hash chunks of `chunkBytes` of `path` (`size` bytes) whose index it takes
   * from `next`, handing each to `onChunk`. Null when there is no worker: the caller hashes
   * every chunk itself. An abort ends the worker (and rejects `done`).
   */
  hash(
    path: string,
    size: number,
    chunkBytes: number,
    blockBytes: number,
    next: Int32Array,
    onChunk: ChunkHandler,
    signal?: AbortSignal,
  ): HashJob | null {
    if (signal?.aborted) this.close();
    const worker = this.#worker;
    if (!worker) return null;
    if (this.#current) throw new Error("a BlockHasher hashes one file at a time");
    const job = ++this.#jobs;
    const done = new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        end();
        reject(signal!.reason);
        this.close();
      };
      const end = () => {
        this.#current = null;
        signal?.removeEventListener("abort", onAbort);
      };
      this.#current = {
        job,
        onChunk,
        resolve: () => (end(), resolve()),
        reject: (err) => (end(), reject(new Error(`hashing ${path}: ${err.message}`))),
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    done.catch(() => {}); // awaited by the caller, or dropped with its error
    worker.postMessage({ job, path, size, chunk: chunkBytes, block: blockBytes, next });
    return { done };
  }

  /** Ends the worker (a job still running rejects). */
  close(): void {
    const w = this.#worker;
    this.#worker = null;
    w?.terminate();
    this.#current?.reject(new Error("the hashing worker was closed"));
  }
}

/** How long an idle worker is kept for the next backup. */
const IDLE_MS = 60_000;

/**
 * Hashing workers kept warm between backups. Starting one blocks the starting thread for
 * 8–11 ms here (Deno builds the worker's runtime on it), then its module compiles for 30–40
 * ms and its first file hashes slower than the next: costs a backup paid on its own path
 * each time, and scheduled backups come in bursts (one cron minute for many VMs, an
 * incremental soon after a full). A worker idle for {@link IDLE_MS} ends.
 */
export class HasherPool {
  #idle: BlockHasher[] = [];
  #timer: ReturnType<typeof setTimeout> | null = null;
  #started = 0;
  #closed = false;

  /** An idle worker, or a new one (which compiles in the background). */
  acquire(): BlockHasher {
    for (let h = this.#idle.pop(); h; h = this.#idle.pop()) {
      if (h.alive) return h;
    }
    this.#started++;
    return BlockHasher.start();
  }

  /** Takes a worker back for the next backup (one closed, after an error or abort, is dropped). */
  release(h: BlockHasher): void {
    if (!h.alive) return;
    if (this.#closed) return h.close();
    this.#idle.push(h);
    if (this.#timer !== null) clearTimeout(this.#timer);
    const timer = setTimeout(() => this.close(), IDLE_MS);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** How many workers it started (tests: whether one was reused). */
  get started(): number {
    return this.#started;
  }

  /** Ends every idle worker now; `final`: and each one released later (the node stops). */
  close(final = false): void {
    this.#closed ||= final;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    for (const h of this.#idle.splice(0)) h.close();
  }
}
