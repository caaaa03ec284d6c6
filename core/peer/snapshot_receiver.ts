/**
 * The receiving end of a streamed snapshot: chunks arrive in order, each is
 * appended to a temporary file as it streams in (never the whole snapshot in
 * memory); after the last one the file is fsynced and renamed, and the `snap`
 * message is handed to Raft with `snapshot.file` naming it.
 */
import { join } from "node:path";
import type { Message } from "../raft/types.ts";
import { ConflictError, ValidationError } from "../errors/mod.ts";
import { renameDurably } from "../store/files.ts";
import { RECEIVED_PREFIX, receivedSnapshotName } from "../store/raft_log.ts";
import { log } from "../log/mod.ts";
import { metrics } from "../metrics/mod.ts";
import type { Envelope, SnapshotChunkMeta } from "./transport.ts";

/** A chunk larger than this is refused (the sender uses 1 MiB by default). */
export const MAX_CHUNK_BYTES = 64 << 20;

interface Transfer {
  id: string;
  path: string;
  file: Deno.FsFile;
  received: number;
  chunks: number;
}

export class SnapshotReceiver {
  private current: Transfer | null = null;
  /** Serializes chunks: a chunk is written completely before the next is looked at. */
  private chain: Promise<unknown> = Promise.resolve();

  /**
   * @param dir where the snapshot files go (the Raft log's snapshot directory)
   * @param deliver hands the completed `snap` message to the node
   */
  constructor(
    private readonly dir: string,
    private readonly deliver: (env: Envelope) => void,
  ) {}

  /** Parses the chunk header a sender set; throws ValidationError when malformed. */
  static parseMeta(header: string | undefined): SnapshotChunkMeta {
    if (!header) throw ValidationError.field("snapshot-chunk", "header missing");
    let meta: SnapshotChunkMeta;
    try {
      meta = JSON.parse(decodeURIComponent(header));
    } catch {
      throw ValidationError.field("snapshot-chunk", "header is not URI-encoded JSON");
    }
    const ok = typeof meta.transfer === "string" && /^[0-9a-f-]{36}$/.test(meta.transfer) &&
      Number.isSafeInteger(meta.offset) && Number.isSafeInteger(meta.total) &&
      meta.offset >= 0 && meta.offset <= meta.total && meta.message?.type === "snap" &&
      // Index and term become part of a file name: only plain integers.
      Number.isSafeInteger(meta.message.snapshot?.meta?.index) &&
      Number.isSafeInteger(meta.message.snapshot?.meta?.term);
    if (!ok) throw ValidationError.field("snapshot-chunk", "malformed chunk description");
    return meta;
  }

  /** Appends one chunk; on the last one installs the file and delivers the message. */
  chunk(meta: SnapshotChunkMeta, body: ReadableStream<Uint8Array> | null): Promise<void> {
    const run = this.chain.then(() => this.write(meta, body));
    this.chain = run.catch(() => {});
    return run;
  }

  /** Chunks of the transfer in progress so far (tests). */
  get chunksReceived(): number {
    return this.current?.chunks ?? 0;
  }

  private async write(meta: SnapshotChunkMeta, body: ReadableStream<Uint8Array> | null) {
    const t = meta.offset === 0 ? await this.begin(meta) : this.current;
    if (!t || t.id !== meta.transfer || t.received !== meta.offset) {
      throw new ConflictError(
        `snapshot chunk at ${meta.offset} does not continue transfer ${t?.id ?? "(none)"} at ${
          t?.received ?? 0
        }`,
      );
    }
    try {
      await this.append(t, meta, body);
    } catch (err) {
      await this.abort();
      throw err;
    }
    if (t.received < meta.total) return;
    await this.finish(t, meta);
  }

  private async begin(meta: SnapshotChunkMeta): Promise<Transfer> {
    await this.abort(); // a new transfer supersedes an unfinished one
    const path = join(this.dir, `${RECEIVED_PREFIX}${meta.transfer}.part`);
    const file = await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
    this.current = { id: meta.transfer, path, file, received: 0, chunks: 0 };
    return this.current;
  }

  private async append(
    t: Transfer,
    meta: SnapshotChunkMeta,
    body: ReadableStream<Uint8Array> | null,
  ): Promise<void> {
    let bytes = 0;
    for await (const part of body ?? []) {
      bytes += part.length;
      if (bytes > MAX_CHUNK_BYTES || t.received + part.length > meta.total) {
        throw ValidationError.field("body", "snapshot chunk exceeds its declared size");
      }
      let off = 0;
      while (off < part.length) off += await t.file.write(part.subarray(off));
      t.received += part.length;
    }
    t.chunks++;
    metrics.snapshotChunks.inc({ direction: "received" });
  }

  private async finish(t: Transfer, meta: SnapshotChunkMeta): Promise<void> {
    t.file.close();
    this.current = null;
    const snap = meta.message.snapshot!;
    const path = join(this.dir, receivedSnapshotName(snap.meta));
    await renameDurably(t.path, path);
    log.info("snapshot received", { from: meta.from, index: snap.meta.index, chunks: t.chunks });
    const message: Message = {
      ...meta.message,
      snapshot: { meta: snap.meta, data: "", file: path },
    };
    this.deliver({
      clusterId: meta.clusterId,
      from: meta.from,
      fromUrl: meta.fromUrl,
      messages: [message],
    });
  }

  /** Drops the unfinished transfer, if any, and its file. */
  async abort(): Promise<void> {
    const t = this.current;
    if (!t) return;
    this.current = null;
    try {
      t.file.close();
    } catch { /* already closed */ }
    await Deno.remove(t.path).catch(() => {});
  }
}
