/**
 * HTTP transport between cluster peers. Messages to one peer are queued and
 * sent as one batch per POST; while a batch is in flight the next one
 * accumulates, so a busy leader sends few, large requests. Every request
 * carries the cluster secret, checked in constant time by the receiver.
 */
import type { Message, NodeId } from "../raft/types.ts";
import { log } from "../log/mod.ts";

export const PEER_SECRET_HEADER = "x-novactl-peer-secret";
export const RAFT_PATH = "/internal/raft";

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
  inflight = 0;
  failing = false;
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

  constructor(
    private readonly self: { id: NodeId; url: string; clusterId: string; secret: string },
    private readonly hooks: TransportHooks,
  ) {}

  /** Remembers the URL a peer announced in its envelope (a joiner may not be in state yet). */
  learnUrl(id: NodeId, url: string): void {
    this.learnedUrls.set(id, url);
  }

  send(messages: Message[]): void {
    if (this.closed) return;
    for (const m of messages) {
      if (this.blocked.has(m.to)) continue;
      let q = this.peers.get(m.to);
      if (!q) this.peers.set(m.to, q = new PeerQueue());
      q.queue.push(m);
    }
    for (const [id, q] of this.peers) this.flush(id, q);
  }

  private flush(id: NodeId, q: PeerQueue): void {
    if (!q.queue.length || q.inflight >= MAX_INFLIGHT) return;
    const url = this.hooks.resolve(id) ?? this.learnedUrls.get(id);
    const batch = q.queue;
    q.queue = [];
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

  private dropped(id: NodeId, batch: Message[]): void {
    this.hooks.unreachable(id);
    for (const m of batch) if (m.type === "snap") this.hooks.snapshotSent(id, false);
  }

  private async post(url: string, messages: Message[]): Promise<void> {
    const env: Envelope = {
      clusterId: this.self.clusterId,
      from: this.self.id,
      fromUrl: this.self.url,
      messages,
    };
    const hasSnapshot = messages.some((m) => m.type === "snap");
    const res = await fetch(url + RAFT_PATH, {
      method: "POST",
      headers: { "content-type": "application/json", [PEER_SECRET_HEADER]: this.self.secret },
      body: JSON.stringify(env),
      signal: AbortSignal.timeout(hasSnapshot ? 60_000 : 5_000),
    });
    await res.body?.cancel();
    if (res.status === 410) this.hooks.removed();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  }

  close(): void {
    this.closed = true;
  }
}

/** Constant-time comparison of secrets. */
export function secretsEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}
