/** Pending ReadIndex requests on the leader, confirmed by heartbeat rounds. */
import type { NodeId, ReadState } from "./types.ts";

interface ReadRequest {
  index: number;
  context: string;
  acks: Set<NodeId>;
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadRequest>();
  /** Contexts in request order: an ack for a later one confirms every earlier one. */
  private queue: string[] = [];

  has(context: string): boolean {
    return this.pending.has(context);
  }

  add(index: number, context: string, self: NodeId): void {
    if (this.pending.has(context)) return;
    this.pending.set(context, { index, context, acks: new Set([self]) });
    this.queue.push(context);
  }

  /** Records an ack; returns the acks so far, or undefined for unknown contexts. */
  recvAck(from: NodeId, context: string): Set<NodeId> | undefined {
    const req = this.pending.get(context);
    if (!req) return undefined;
    req.acks.add(from);
    return req.acks;
  }

  /** Releases `context` and every request queued before it. */
  advance(context: string): ReadState[] {
    const at = this.queue.indexOf(context);
    if (at < 0) return [];
    const released = this.queue.slice(0, at + 1);
    this.queue = this.queue.slice(at + 1);
    return released.map((c) => {
      const req = this.pending.get(c)!;
      this.pending.delete(c);
      return { index: req.index, context: c };
    });
  }

  lastPendingContext(): string | undefined {
    return this.queue[this.queue.length - 1];
  }

  /** Forgets every pending request, returning their contexts. */
  drain(): string[] {
    const all = this.queue;
    this.queue = [];
    this.pending.clear();
    return all;
  }
}
