/**
 * HTTP transport between cluster peers. Messages to one peer are queued and
 * sent as one batch per POST; while a batch is in flight the next one
 * accumulates, so a busy leader sends few, large requests. Requests go through
 * the node's {@link PeerFetch} (signed with its key): the receiver knows the sender from
 * the signature and refuses an envelope whose `from` names anyone else.
 *
 * Memory is bounded: a peer's queue holds at most `maxQueueBytes` (and
 * `maxQueueMessages`); beyond that the oldest messages are dropped and Raft is
 * told the peer is unreachable, so it probes and re-sends from the log.
 * Snapshots do not travel in a batch: their file is streamed to the peer in
 * chunks of `snapshotChunkBytes` (see snapshot_receiver.ts for the other end).
 */
import type { Message, NodeId } from "../raft/types.ts";
import { log } from "../log/mod.ts";
import { metrics } from "../metrics/mod.ts";
import type { PeerFetch } from "./client.ts";
import { OutboundStream, RAFT_STREAM_PATH, RAFT_STREAM_TYPE, type StreamEnd } from "./stream.ts";

export const RAFT_PATH = "/internal/raft";
export const SNAPSHOT_PATH = "/internal/raft/snapshot";
/** Header of a snapshot chunk: URI-encoded JSON {@link SnapshotChunkMeta}. */
export const SNAPSHOT_CHUNK_HEADER = "x-novactl-snapshot-chunk";

/** Describes one chunk of a snapshot transfer; the body is the chunk's bytes. */
export interface SnapshotChunkMeta {
  clusterId: string;
  from: NodeId;
  fromUrl: string;
  /** Identifies one transfer: chunks of another transfer restart the receiver. */
  transfer: string;
  /** Byte offset of this chunk in the snapshot data. */
  offset: number;
  /** Total bytes of the snapshot data. */
  total: number;
  /** The `snap` message, with `snapshot.data` empty and no `file`. */
  message: Message;
}

export interface TransportLimits {
  /** Max estimated bytes queued for one peer. */
  maxQueueBytes: number;
  /** Max messages queued for one peer. */
  maxQueueMessages: number;
  /** Bytes per snapshot chunk. */
  snapshotChunkBytes: number;
  /** A stream whose oldest frame waits this long untaken is aborted (./stream.ts). */
  streamStallMs: number;
  /** A stream older than this is closed cleanly and the next batch opens a new one. */
  streamMaxAgeMs: number;
}

export const DEFAULT_TRANSPORT_LIMITS: TransportLimits = {
  maxQueueBytes: 16 << 20,
  maxQueueMessages: 4096,
  snapshotChunkBytes: 1 << 20,
  streamStallMs: 5_000,
  streamMaxAgeMs: 30_000,
};

export interface Envelope {
  clusterId: string;
  from: NodeId;
  fromUrl: string;
  messages: Message[];
}

export interface TransportHooks {
  /** Current URL of a peer, if known. */
  resolve(id: NodeId): string | undefined;
  unreachable(id: NodeId): void;
  snapshotSent(id: NodeId, ok: boolean): void;
  /** The leader answered that we are no longer a member. */
  removed(): void;
}

/** Inflight POSTs per peer: one keeps per-peer order, two hides a round trip. */
const MAX_INFLIGHT = 2;

class PeerQueue {
  queue: Message[] = [];
  /** Estimated bytes of `queue`. */
  bytes = 0;
  inflight = 0;
  failing = false;
  /** The open stream to this peer (./stream.ts), if any. */
  stream: OutboundStream | null = null;
  /** The peer answered a stream with 404: it predates streams; batches go by POST. */
  noStreams = false;
}

/** Empties a peer's queue, returning what it held. */
function takeQueue(q: PeerQueue): Message[] {
  const batch = q.queue;
  q.queue = [];
  q.bytes = 0;
  return batch;
}

/** Rough wire size of a message: what a queue holding it costs. */
function messageBytes(m: Message): number {
  let n = 64;
  for (const e of m.entries ?? []) n += e.data.length + 32;
  if (m.snapshot) n += m.snapshot.data.length;
  return n;
}

export class PeerTransport {
  private readonly peers = new Map<NodeId, PeerQueue>();
  private readonly learnedUrls = new Map<NodeId, string>();
  private closed = false;
  /**
   * Peers we pretend not to reach, in both directions. Only settable through
   * the fault-injection route, which exists only when NOVACTL_FAULT_INJECTION=1
   * (tests that partition a real cluster).
   */
  readonly blocked = new Set<NodeId>();

  private readonly limits: TransportLimits;

  constructor(
    private readonly self: { id: NodeId; url: string; clusterId: string },
    private readonly hooks: TransportHooks,
    limits: Partial<TransportLimits> = {},
    private readonly peerFetch: PeerFetch = (url, init) => fetch(url, init),
  ) {
    this.limits = { ...DEFAULT_TRANSPORT_LIMITS, ...limits };
  }

  /** Forgets a peer that left the cluster (its queue, stream and announced URL). */
  forget(id: NodeId): void {
    const q = this.peers.get(id);
    q?.stream?.close();
    if (q) this.dropMessages(id, q, q.queue.length);
    this.peers.delete(id);
    this.learnedUrls.delete(id);
  }

  /** Messages queued for a peer, not yet handed to a POST (tests, metrics). */
  queuedFor(id: NodeId): number {
    return this.peers.get(id)?.queue.length ?? 0;
  }

  /** Remembers the URL a peer announced in its envelope (a joiner may not be in state yet). */
  learnUrl(id: NodeId, url: string): void {
    this.learnedUrls.set(id, url);
  }

  send(messages: Message[]): void {
    if (this.closed) return;
    for (const m of messages) {
      if (this.blocked.has(m.to)) continue;
      if (m.type === "snap" && m.snapshot?.file !== undefined) {
        this.streamSnapshot(m);
        continue;
      }
      let q = this.peers.get(m.to);
      if (!q) this.peers.set(m.to, q = new PeerQueue());
      q.queue.push(m);
      q.bytes += messageBytes(m);
      this.enforceLimits(m.to, q);
    }
    for (const [id, q] of this.peers) this.flush(id, q);
  }

  /**
   * A peer that cannot keep up must not make us buffer without bound: the
   * oldest messages go (Raft re-sends what matters once told the peer is
   * unreachable); the newest message is always kept.
   */
  private enforceLimits(id: NodeId, q: PeerQueue): void {
    let excess = 0;
    let bytes = q.bytes;
    while (
      q.queue.length - excess > 1 &&
      (bytes > this.limits.maxQueueBytes || q.queue.length - excess > this.limits.maxQueueMessages)
    ) {
      bytes -= messageBytes(q.queue[excess]);
      excess++;
    }
    if (excess) this.dropMessages(id, q, excess);
  }

  private dropMessages(id: NodeId, q: PeerQueue, count: number): void {
    if (!count) return;
    const dropped = q.queue.splice(0, count);
    for (const m of dropped) q.bytes -= messageBytes(m);
    metrics.peerMessagesDropped.inc(count);
    this.dropped(id, dropped);
  }

  private flush(id: NodeId, q: PeerQueue): void {
    if (!q.queue.length) return;
    if (!q.noStreams && !q.queue.some((m) => m.type === "snap")) {
      this.flushToStream(id, q);
      return;
    }
    if (q.inflight >= MAX_INFLIGHT) return;
    const url = this.urlOf(id);
    const batch = takeQueue(q);
    if (!url) {
      this.dropped(id, batch);
      return;
    }
    q.inflight++;
    this.post(url, batch).then(
      () => {
        q.failing = false;
        for (const m of batch) if (m.type === "snap") this.hooks.snapshotSent(id, true);
      },
      (err) => {
        if (!q.failing) log.warn("peer unreachable", { peer: id, url, error: String(err) });
        q.failing = true;
        this.dropped(id, batch);
      },
    ).finally(() => {
      q.inflight--;
      this.flush(id, q);
    });
  }

  /**
   * Writes the queue as one frame on the peer's stream, opening one if needed. A
   * stream the peer does not read (more than maxQueueBytes waiting, or nothing
   * taken for streamStallMs) is given up: its messages are as good as lost, Raft
   * re-sends once told. An old stream is retired cleanly first.
   */
  private flushToStream(id: NodeId, q: PeerQueue): void {
    if (q.stream) this.checkStream(id, q, q.stream);
    if (!q.stream?.open) {
      const url = this.urlOf(id);
      if (!url) return this.dropped(id, takeQueue(q));
      q.stream = this.openStream(id, q, url);
    }
    const batch = takeQueue(q);
    if (q.stream.write(this.envelope(batch))) {
      metrics.peerStreamFrames.inc();
      return;
    }
    // The stream broke under us: this batch is lost (Raft re-sends), the next opens anew.
    q.stream = null;
    this.dropped(id, batch);
  }

  /** Aborts a stalled stream, retires an old one; either way the next batch opens anew. */
  private checkStream(id: NodeId, q: PeerQueue, stream: OutboundStream): void {
    const now = performance.now();
    const stalledMs = stream.stalledMs(now);
    const reason = stream.backlog > this.limits.maxQueueBytes
      ? "backlog"
      : stalledMs > this.limits.streamStallMs
      ? "stalled"
      : now - stream.openedAt > this.limits.streamMaxAgeMs
      ? "retired"
      : null;
    if (!reason) return;
    metrics.peerStreamsEnded.inc({ reason });
    q.stream = null;
    if (reason === "retired") {
      stream.close(); // the receiver reads what was written, then answers
      // ...unless the connection is the silent kind: then it goes once it has had as long again.
      const timer = setTimeout(() => stream.abort(), this.limits.streamStallMs);
      Deno.unrefTimer(timer);
      stream.ended.finally(() => clearTimeout(timer));
      return;
    }
    log.warn("peer stream stalled: aborting it", {
      peer: id,
      backlog: stream.backlog,
      stalledMs: Math.round(stalledMs),
    });
    stream.abort();
    this.hooks.unreachable(id);
  }

  private openStream(id: NodeId, q: PeerQueue, url: string): OutboundStream {
    const stream = new OutboundStream((body, signal) =>
      this.peerFetch(url + RAFT_STREAM_PATH, {
        method: "POST",
        headers: { "content-type": RAFT_STREAM_TYPE },
        body,
        // A stream lives until it is retired (streamMaxAgeMs), stalls or breaks.
        signal,
        ...({ duplex: "half" } as RequestInit),
      })
    );
    metrics.peerStreamsOpened.inc();
    stream.ended.then((end) => this.streamEnded(id, q, stream, url, end));
    return stream;
  }

  private streamEnded(
    id: NodeId,
    q: PeerQueue,
    stream: OutboundStream,
    url: string,
    end: StreamEnd,
  ): void {
    if (q.stream === stream) q.stream = null;
    if (this.closed) return;
    if ("status" in end && end.status === 410) this.hooks.removed();
    if ("status" in end && (end.status === 404 || end.status === 405)) {
      q.noStreams = true; // a peer from before streams: POST per batch
      log.info("peer takes no Raft streams: posting batches", { peer: id });
    } else if ("error" in end || end.status !== 200) {
      const why = "error" in end ? String(end.error) : `HTTP ${end.status}`;
      if (!q.failing) log.warn("peer unreachable", { peer: id, url, error: why });
      q.failing = true;
    } else {
      q.failing = false;
      // We ended it and the receiver read it all: nothing was lost.
      if (stream.closedByUs) return;
    }
    // What was written and not yet stepped there is lost: Raft probes and re-sends.
    this.hooks.unreachable(id);
    if (q.queue.length) this.flush(id, q);
  }

  /** Where a peer is: the member record's URL, else the one it announced. */
  private urlOf(id: NodeId): string | undefined {
    return this.hooks.resolve(id) ?? this.learnedUrls.get(id);
  }

  private envelope(messages: Message[]): Envelope {
    return {
      clusterId: this.self.clusterId,
      from: this.self.id,
      fromUrl: this.self.url,
      messages,
    };
  }

  private dropped(id: NodeId, batch: Message[]): void {
    this.hooks.unreachable(id);
    for (const m of batch) if (m.type === "snap") this.hooks.snapshotSent(id, false);
  }

  private async post(url: string, messages: Message[]): Promise<void> {
    const env = this.envelope(messages);
    const hasSnapshot = messages.some((m) => m.type === "snap");
    const res = await this.peerFetch(url + RAFT_PATH, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(env),
      signal: AbortSignal.timeout(hasSnapshot ? 60_000 : 5_000),
    });
    await res.arrayBuffer(); // read, not cancelled: the connection goes back to the pool
    if (res.status === 410) this.hooks.removed();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  }

  /**
   * Sends a snapshot file in chunks, one POST each, each acknowledged before
   * the next is read: at most one chunk of it is in memory. Raft hears of
   * the outcome through snapshotSent.
   */
  private streamSnapshot(m: Message): void {
    const to = m.to;
    const url = this.urlOf(to);
    const done = (ok: boolean, err?: unknown) => {
      if (!ok) {
        log.warn("snapshot transfer failed", { peer: to, error: String(err) });
        this.hooks.unreachable(to);
      }
      this.hooks.snapshotSent(to, ok);
    };
    if (!url) return done(false, "no URL known");
    this.sendSnapshotChunks(url, m).then(
      (chunks) => {
        log.info("snapshot sent", { peer: to, index: m.snapshot!.meta.index, chunks });
        done(true);
      },
      (err) => done(false, err),
    );
  }

  private async sendSnapshotChunks(url: string, m: Message): Promise<number> {
    const snap = m.snapshot!;
    using file = await Deno.open(snap.file!, { read: true });
    const total = (await file.stat()).size;
    const meta: Omit<SnapshotChunkMeta, "offset"> = {
      clusterId: this.self.clusterId,
      from: this.self.id,
      fromUrl: this.self.url,
      transfer: crypto.randomUUID(),
      total,
      message: { ...m, snapshot: { meta: snap.meta, data: "" } },
    };
    const buf = new Uint8Array(Math.max(1, this.limits.snapshotChunkBytes));
    let offset = 0;
    let chunks = 0;
    do {
      const n = await readUpTo(file, buf);
      if (n === 0 && offset < total) {
        throw new Error(`snapshot file shrank at ${offset} of ${total}`);
      }
      await this.postChunk(url, { ...meta, offset }, buf.subarray(0, n));
      offset += n;
      chunks++;
      metrics.snapshotChunks.inc({ direction: "sent" });
    } while (offset < total && !this.closed);
    if (offset < total) throw new Error("transport closed during a snapshot transfer");
    return chunks;
  }

  private async postChunk(
    url: string,
    meta: SnapshotChunkMeta,
    body: Uint8Array<ArrayBuffer>,
  ): Promise<void> {
    const res = await this.peerFetch(url + SNAPSHOT_PATH, {
      method: "POST",
      headers: {
        "content-type": "application/octet-stream",
        [SNAPSHOT_CHUNK_HEADER]: encodeURIComponent(JSON.stringify(meta)),
      },
      body,
      signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    if (res.status === 410) this.hooks.removed();
    if (!res.ok) throw new Error(`HTTP ${res.status} ${text.slice(0, 200)}`);
  }

  /**
   * Registers the reader of a stream a peer sent us; {@link close} cancels it, so a
   * stopping node need not wait for its peers to hang up.
   */
  trackInbound(cancel: () => void): () => void {
    this.inbound.add(cancel);
    return () => this.inbound.delete(cancel);
  }

  private readonly inbound = new Set<() => void>();

  close(): void {
    this.closed = true;
    for (const q of this.peers.values()) q.stream?.close();
    for (const cancel of [...this.inbound]) cancel();
    this.inbound.clear();
  }
}

/** Reads until `buf` is full or the file ends; returns the bytes read. */
async function readUpTo(file: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let n = 0;
  while (n < buf.length) {
    const r = await file.read(buf.subarray(n));
    if (r === null) break;
    n += r;
  }
  return n;
}
