/**
 * Wing–Gong linearizability checker with Lowe's improvements (the algorithm used by
 * Porcupine and Knossos' "wgl" checker).
 *
 * The history is turned into a doubly linked list of call and return events sorted by
 * time. The search walks that list: at a call event it tries to linearize the operation
 * (apply it to the model) and, if the model accepts, "lifts" its call and return out of
 * the list and restarts from the head; at a return event it has found an operation that
 * must already have taken effect but could not be placed, so it backtracks. Lowe's
 * improvement memoizes every (set of linearized operations, model state) pair reached,
 * since two search paths that reach the same pair have identical futures; that turns the
 * factorial search into something close to linear for realistic histories.
 *
 * Operations with an indefinite outcome have `ret = Infinity`: their return event sorts
 * after every real one, so the search may place them anywhere after their call. Placing
 * one after every other operation is indistinguishable from it never having happened, so
 * the model only needs to accept "unknown" outputs in every state.
 */

/** One client-observed operation. `call`/`ret` share a clock; `ret = Infinity` = indefinite. */
export interface Operation<I, O> {
  client: number;
  input: I;
  output: O;
  call: number;
  ret: number;
}

/**
 * Conventional output of an operation with an indefinite outcome. Record such operations
 * with `ret = Infinity`; the model must accept this output in every state.
 */
export interface Unknown {
  unknown: true;
}

/** A deterministic sequential specification of the system under test. */
export interface Model<S, I, O> {
  init(): S;
  /** Applies `input` in `state`; `ok` is false when the observed `output` is impossible there. */
  step(state: S, input: I, output: O): { ok: boolean; state: S };
  /** Canonical key of a state: equal hashes are treated as equal states by the memo. */
  hash(state: S): string;
  /** Human-readable state, used in failure explanations. */
  describe?(state: S): string;
  /** Human-readable operation, used in failure explanations. */
  describeOperation?(input: I, output: O): string;
  /**
   * True for operations that are accepted in every state and never change it (e.g. a read
   * that timed out). They cannot affect the verdict, but an indefinite one would stay open
   * until the end of the history and multiply the search space, so they are dropped.
   */
  ignorable?(input: I, output: O): boolean;
}

export interface CheckOptions {
  /** Give up (inconclusive: `ok: false, timedOut: true`) after this long. Default: no limit. */
  timeoutMs?: number;
}

/** A candidate the search could have placed next at the point where it got stuck. */
export interface Candidate<I, O> {
  index: number;
  op: Operation<I, O>;
  /** Whether the model accepts it in `stateAfterPrefix`; accepted ones only led to dead ends. */
  accepted: boolean;
}

export interface Failure<S, I, O> {
  /** The longest sequence of operations the search managed to linearize, in order. */
  longestPrefix: Operation<I, O>[];
  longestPrefixIndices: number[];
  stateAfterPrefix: S;
  /** The operation whose return was reached without it being placeable after that prefix. */
  unplaced: Operation<I, O>;
  unplacedIndex: number;
  /** Operations that were open (called, not yet linearized) at that point. */
  candidates: Candidate<I, O>[];
  explanation: string;
}

export interface CheckResult<S, I, O> {
  /** True only when a linearization was found; false on violation *or* timeout. */
  ok: boolean;
  /** Set when the search ran out of time: the history is neither proven good nor bad. */
  timedOut?: boolean;
  /** History indices in linearization order (ignorable operations are left out). */
  witness?: number[];
  failure?: Failure<S, I, O>;
}

const NIL = -1;
const HEAD = 0;
/** How many search steps run between clock reads. */
const TIMEOUT_CHECK_INTERVAL = 4096;

export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  opts: CheckOptions = {},
): CheckResult<S, I, O> {
  validateHistory(history);
  const relevant = history
    .map((_, index) => index)
    .filter((i) => !model.ignorable?.(history[i].input, history[i].output));
  const search = new Search(model, history, relevant, opts.timeoutMs ?? Infinity);
  const outcome = search.run();
  if (outcome === "linearizable") return { ok: true, witness: search.witness() };
  if (outcome === "timeout") return { ok: false, timedOut: true };
  return { ok: false, failure: search.explainFailure() };
}

function validateHistory<I, O>(history: Operation<I, O>[]): void {
  history.forEach((op, i) => {
    if (!Number.isFinite(op.call)) throw new RangeError(`operation ${i}: call must be finite`);
    if (Number.isNaN(op.ret) || op.ret < op.call) {
      throw new RangeError(`operation ${i}: ret (${op.ret}) must be >= call (${op.call})`);
    }
  });
}

interface Event {
  time: number;
  isCall: boolean;
  /** Position in the `relevant` array. */
  op: number;
}

/**
 * Sorts call/return events by time. At equal times calls come first so that operations
 * whose intervals merely touch count as concurrent: with coarse clocks, claiming a
 * real-time order we did not observe could report a false violation.
 */
function sortedEvents<I, O>(history: Operation<I, O>[], relevant: number[]): Event[] {
  const events: Event[] = [];
  relevant.forEach((h, op) => {
    events.push({ time: history[h].call, isCall: true, op });
    events.push({ time: history[h].ret, isCall: false, op });
  });
  return events.sort((a, b) => {
    if (a.time !== b.time) return a.time < b.time ? -1 : 1;
    if (a.isCall !== b.isCall) return a.isCall ? -1 : 1;
    return a.op - b.op;
  });
}

/**
 * Set of linearized operations, with an incrementally maintained Zobrist hash (two 32-bit
 * halves) so memo lookups do not have to serialize the whole bitset.
 */
class LinearizedSet {
  readonly bits: Uint32Array;
  private readonly zobrist: Uint32Array;
  h1 = 0;
  h2 = 0;

  constructor(size: number) {
    this.bits = new Uint32Array(Math.ceil(size / 32));
    this.zobrist = new Uint32Array(size * 2);
    // Fixed seed: the hash only has to spread keys, and determinism keeps runs repeatable.
    const next = mulberry32(0x9e3779b9);
    for (let i = 0; i < this.zobrist.length; i++) this.zobrist[i] = next();
  }

  /** Adds the op if absent, removes it if present (both are their own inverse). */
  toggle(op: number): void {
    this.bits[op >>> 5] ^= 1 << (op & 31);
    this.h1 = (this.h1 ^ this.zobrist[2 * op]) >>> 0;
    this.h2 = (this.h2 ^ this.zobrist[2 * op + 1]) >>> 0;
  }

  has(op: number): boolean {
    return (this.bits[op >>> 5] & (1 << (op & 31))) !== 0;
  }
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function sameBits(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Lowe's memo: every (linearized set, state) pair the search has already explored. */
class VisitedConfigurations {
  private readonly buckets = new Map<string, Uint32Array[]>();

  /** Records the configuration; returns false if it had been seen before. */
  add(set: LinearizedSet, stateHash: string): boolean {
    const key = `${set.h1}:${set.h2}:${stateHash}`;
    const bucket = this.buckets.get(key);
    if (!bucket) {
      this.buckets.set(key, [set.bits.slice()]);
      return true;
    }
    // Zobrist collisions are rare but possible; exact comparison keeps the memo sound.
    if (bucket.some((bits) => sameBits(bits, set.bits))) return false;
    bucket.push(set.bits.slice());
    return true;
  }
}

/** Deepest point the search reached before having to backtrack. */
interface DeadEnd<S> {
  prefix: number[];
  state: S;
  stuckOp: number;
}

type Outcome = "linearizable" | "violation" | "timeout";

class Search<S, I, O> {
  // The event list, as parallel arrays indexed by node (node 0 is the head sentinel).
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** For a call node, its return node; NIL for return nodes. */
  private readonly match: Int32Array;
  private readonly nodeOp: Int32Array;
  private readonly events: Event[];

  private readonly linearized: LinearizedSet;
  private readonly visited = new VisitedConfigurations();
  /** Linearized call nodes, in order, with the state before each was applied. */
  private readonly stackNodes: number[] = [];
  private readonly stackStates: S[] = [];
  private deepest: DeadEnd<S> | undefined;

  constructor(
    private readonly model: Model<S, I, O>,
    private readonly history: Operation<I, O>[],
    private readonly relevant: number[],
    private readonly timeoutMs: number,
  ) {
    this.events = sortedEvents(history, relevant);
    const size = this.events.length + 1;
    this.next = new Int32Array(size);
    this.prev = new Int32Array(size);
    this.match = new Int32Array(size).fill(NIL);
    this.nodeOp = new Int32Array(size).fill(NIL);
    this.linearized = new LinearizedSet(relevant.length);
    this.buildList();
  }

  private buildList(): void {
    const callNode = new Int32Array(this.relevant.length);
    this.events.forEach((event, i) => {
      const node = i + 1;
      this.prev[node] = node - 1;
      this.next[node] = node + 1 < this.next.length ? node + 1 : NIL;
      this.nodeOp[node] = event.op;
      if (event.isCall) callNode[event.op] = node;
      else this.match[callNode[event.op]] = node;
    });
    this.next[HEAD] = this.events.length > 0 ? 1 : NIL;
    this.prev[HEAD] = NIL;
  }

  run(): Outcome {
    const deadline = performance.now() + this.timeoutMs;
    let state = this.model.init();
    let node = this.next[HEAD];
    let steps = 0;
    while (this.next[HEAD] !== NIL) {
      if (++steps % TIMEOUT_CHECK_INTERVAL === 0 && performance.now() > deadline) {
        return "timeout";
      }
      if (this.match[node] !== NIL) {
        const applied = this.tryLinearize(node, state);
        if (applied) {
          state = applied.state;
          node = this.next[HEAD];
        } else {
          node = this.next[node];
        }
        continue;
      }
      // A return event: its operation had to take effect by now and was not placed.
      this.noteDeadEnd(this.nodeOp[node], state);
      if (this.stackNodes.length === 0) return "violation";
      const undone = this.backtrack();
      state = undone.state;
      node = this.next[undone.node];
    }
    return "linearizable";
  }

  /** Applies the op at call `node` if the model allows it and the result is unexplored. */
  private tryLinearize(node: number, state: S): { state: S } | undefined {
    const op = this.nodeOp[node];
    const { input, output } = this.history[this.relevant[op]];
    const result = this.model.step(state, input, output);
    if (!result.ok) return undefined;
    this.linearized.toggle(op);
    if (!this.visited.add(this.linearized, this.model.hash(result.state))) {
      this.linearized.toggle(op);
      return undefined;
    }
    this.stackNodes.push(node);
    this.stackStates.push(state);
    this.lift(node);
    return { state: result.state };
  }

  /** Undoes the most recent linearization, returning its call node and the prior state. */
  private backtrack(): { node: number; state: S } {
    const node = this.stackNodes.pop()!;
    const state = this.stackStates.pop()!;
    this.linearized.toggle(this.nodeOp[node]);
    this.unlift(node);
    return { node, state };
  }

  /** Removes a call event and its return from the list (they stay linked to their neighbours). */
  private lift(call: number): void {
    const ret = this.match[call];
    this.unlink(call);
    this.unlink(ret);
  }

  /** Reinserts what `lift` removed, in reverse order so the neighbour links are valid. */
  private unlift(call: number): void {
    const ret = this.match[call];
    this.relink(ret);
    this.relink(call);
  }

  private unlink(node: number): void {
    const { next, prev } = this;
    next[prev[node]] = next[node];
    if (next[node] !== NIL) prev[next[node]] = prev[node];
  }

  private relink(node: number): void {
    const { next, prev } = this;
    next[prev[node]] = node;
    if (next[node] !== NIL) prev[next[node]] = node;
  }

  private noteDeadEnd(stuckOp: number, state: S): void {
    if (this.deepest && this.deepest.prefix.length >= this.stackNodes.length) return;
    this.deepest = {
      prefix: this.stackNodes.map((n) => this.nodeOp[n]),
      state,
      stuckOp,
    };
  }

  witness(): number[] {
    return this.stackNodes.map((n) => this.relevant[this.nodeOp[n]]);
  }

  explainFailure(): Failure<S, I, O> {
    const dead = this.deepest!;
    const toHistory = (op: number) => this.relevant[op];
    const longestPrefixIndices = dead.prefix.map(toHistory);
    const unplacedIndex = toHistory(dead.stuckOp);
    const candidates = this.openOperationsAt(dead).map((op): Candidate<I, O> => {
      const index = toHistory(op);
      const { input, output } = this.history[index];
      return {
        index,
        op: this.history[index],
        accepted: this.model.step(dead.state, input, output).ok,
      };
    });
    const failure = {
      longestPrefix: longestPrefixIndices.map((i) => this.history[i]),
      longestPrefixIndices,
      stateAfterPrefix: dead.state,
      unplaced: this.history[unplacedIndex],
      unplacedIndex,
      candidates,
    };
    return { ...failure, explanation: this.describeFailure(failure) };
  }

  /**
   * Operations whose call precedes the stuck return event but that are not in the prefix:
   * exactly the ones the search could have tried next at the dead end.
   */
  private openOperationsAt(dead: DeadEnd<S>): number[] {
    const inPrefix = new Set(dead.prefix);
    const open: number[] = [];
    for (const event of this.events) {
      if (!event.isCall && event.op === dead.stuckOp) break;
      if (event.isCall && !inPrefix.has(event.op)) open.push(event.op);
    }
    return open;
  }

  private describeFailure(f: Omit<Failure<S, I, O>, "explanation">): string {
    const state = this.model.describe?.(f.stateAfterPrefix) ?? JSON.stringify(f.stateAfterPrefix);
    const tail = f.longestPrefixIndices.slice(-10);
    const lines = [
      `not linearizable: longest linearizable prefix has ${f.longestPrefix.length} of ` +
      `${this.relevant.length} operations, leaving state ${state}`,
    ];
    if (tail.length > 0) {
      lines.push(`  last ${tail.length} linearized:`);
      for (const i of tail) lines.push(`    ${this.describeOp(i)}`);
    }
    lines.push(`  could not place #${f.unplacedIndex}: ${this.describeOp(f.unplacedIndex)}`);
    lines.push(`  open operations at that point (model verdict in that state):`);
    for (const c of f.candidates) {
      const verdict = c.accepted ? "accepted but leads to a dead end" : "rejected";
      lines.push(`    ${this.describeOp(c.index)}: ${verdict}`);
    }
    return lines.join("\n");
  }

  private describeOp(index: number): string {
    const op = this.history[index];
    const body = this.model.describeOperation?.(op.input, op.output) ??
      `${JSON.stringify(op.input)} -> ${JSON.stringify(op.output)}`;
    const ret = Number.isFinite(op.ret) ? String(op.ret) : "never";
    return `#${index} client ${op.client} [${op.call}, ${ret}] ${body}`;
  }
}
