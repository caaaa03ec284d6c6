/**
 * Test helpers for the Raft core: tiny assertions (jsr:@std is unreachable
 * here), a seeded PRNG, and a synchronous in-memory network of RaftNodes.
 */
import { deepStrictEqual } from "node:assert";
import { MemoryStorage } from "./memory_storage.ts";
import { RaftNode } from "./raft.ts";
import type {
  ConfState,
  Entry,
  Message,
  NodeId,
  RaftConfig,
  ReadState,
  Ready,
  Role,
} from "./types.ts";

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

/** Runs fn, expecting it to throw an instance of `cls` (whose message matches `re`, if given). */
export function assertThrows(
  fn: () => unknown,
  cls: abstract new (...args: never[]) => Error,
  re?: RegExp,
): Error {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof cls)) throw new Error(`expected ${cls.name}, got ${err}`);
    if (re && !re.test(err.message)) throw new Error(`"${err.message}" does not match ${re}`);
    return err;
  }
  throw new Error(`expected ${cls.name} to be thrown`);
}

/** mulberry32: a tiny, fast, seedable PRNG with good enough statistics for simulation. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function testConfig(id: NodeId, over: Partial<RaftConfig> = {}): RaftConfig {
  let seed = 0;
  for (const ch of id) seed = seed * 31 + ch.charCodeAt(0);
  return {
    id,
    electionTicks: 10,
    heartbeatTicks: 1,
    random: mulberry32(seed),
    preVote: false,
    checkQuorum: false,
    maxMsgBytes: 1 << 20,
    maxInflight: 256,
    applied: 0,
    ...over,
  };
}

export interface TestNode {
  id: NodeId;
  raft: RaftNode;
  storage: MemoryStorage;
  cfg: RaftConfig;
  /** Every entry handed out in committedEntries, in order. */
  applied: Entry[];
  readStates: ReadState[];
  droppedReads: string[];
  /** Every Ready this node produced (for batching assertions). */
  readies: Ready[];
}

/**
 * A synchronous network: messages are queued and delivered in order by
 * deliverAll(); a drop filter models partitions and loss.
 */
export class TestNetwork {
  readonly nodes = new Map<NodeId, TestNode>();
  /** Every message delivered or dropped, in send order. */
  readonly sent: Message[] = [];
  private queue: Message[] = [];
  private readonly cut = new Set<string>();
  /** Extra drop rule; return true to drop. */
  dropIf: ((m: Message) => boolean) | null = null;

  constructor(ids: NodeId[], over: Partial<RaftConfig> = {}, learners: NodeId[] = []) {
    const conf = { voters: ids, learners };
    for (const id of [...ids, ...learners]) this.add(id, conf, over);
  }

  add(id: NodeId, conf: ConfState, over: Partial<RaftConfig> = {}): TestNode {
    const storage = new MemoryStorage(conf);
    const cfg = testConfig(id, over);
    const node: TestNode = {
      id,
      raft: new RaftNode(cfg, storage),
      storage,
      cfg,
      applied: [],
      readStates: [],
      droppedReads: [],
      readies: [],
    };
    this.nodes.set(id, node);
    return node;
  }

  node(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  raft(id: NodeId): RaftNode {
    return this.node(id).raft;
  }

  /** Simulates a crash and restart: only what was saved to storage survives. */
  restart(id: NodeId, over: Partial<RaftConfig> = {}): TestNode {
    const old = this.node(id);
    const applied = old.applied.length ? old.applied[old.applied.length - 1].index : 0;
    const cfg = { ...old.cfg, applied: Math.max(applied, old.storage.firstIndex() - 1), ...over };
    old.raft = new RaftNode(cfg, old.storage);
    old.cfg = cfg;
    return old;
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
    this.dropIf = null;
  }

  /** Drains every node's Ready: persist, queue messages, apply, advance. */
  processReadies(): void {
    for (const n of this.nodes.values()) {
      while (n.raft.hasReady()) {
        const rd = n.raft.ready();
        n.readies.push(rd);
        n.storage.save(rd);
        for (const m of rd.messages) this.queue.push(m);
        for (const e of rd.committedEntries) n.applied.push(e);
        for (const rs of rd.readStates) n.readStates.push(rs);
        for (const c of rd.droppedReadContexts ?? []) n.droppedReads.push(c);
        n.raft.advance(rd);
      }
    }
  }

  /** Delivers messages (and the ones they cause) until the network is quiet. */
  deliverAll(maxRounds = 1000): void {
    for (let round = 0; round < maxRounds; round++) {
      this.processReadies();
      if (!this.queue.length) return;
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) {
        this.sent.push(m);
        if (this.cut.has(`${m.from}>${m.to}`) || this.dropIf?.(m)) continue;
        this.nodes.get(m.to)?.raft.step(m);
      }
    }
    throw new Error("network did not quiesce");
  }

  /** Hands a crafted message to its recipient and processes the consequences. */
  stepAndDeliver(m: Message): void {
    this.node(m.to).raft.step(m);
    this.deliverAll();
  }

  tick(ids: NodeId[], n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const id of ids) this.raft(id).tick();
      this.deliverAll();
    }
  }

  tickAll(n = 1): void {
    this.tick([...this.nodes.keys()], n);
  }

  campaign(id: NodeId): void {
    this.raft(id).campaign();
    this.deliverAll();
  }

  role(id: NodeId): Role {
    return this.raft(id).status().role;
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()].filter((n) => n.raft.status().role === "leader").map((n) =>
      n.id
    );
  }

  /** Messages sent since `mark` (an index into `sent`) matching a predicate. */
  sentSince(mark: number, pred: (m: Message) => boolean): Message[] {
    return this.sent.slice(mark).filter(pred);
  }
}
