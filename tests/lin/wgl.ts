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
 * since two search paths that reach the same pair have identical futures.
 *
 * Operations with an indefinite outcome have `ret = Infinity`: the search may place them
 * anywhere after their call, and placing one after every completed operation is
 * indistinguishable from it never having happened. Plain WGL copes badly with them: an
 * op the model always accepts can be tried in front of every dead end, and each try
 * opens another branch. So this checker adds reductions that never change the verdict
 * (each is justified where it is implemented, and the tests compare against brute
 * force):
 * - the search stops once every completed op is placed (leftover indefinite ops go last);
 * - candidates are tried in phases: read-only ops first, then other completed ops, then
 *   indefinite ones; an accepted read-only op is committed without branching;
 * - an indefinite op is never applied where it would not change the state;
 * - the memo also prunes configurations dominated by a failed one with fewer indefinite
 *   ops applied;
 * - optional model hooks add domain knowledge: ops that can never be accepted again
 *   (`neverAccepts`), indefinite ops that can no longer matter (`inert`), and classes of
 *   interchangeable indefinite ops applied in call order only (`indefiniteClasses`).
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
 * with `ret = Infinity`.
 */
export interface Unknown {
  unknown: true;
}

/**
 * A deterministic sequential specification of the system under test.
 *
 * Contract: `step` must accept every operation with `ret = Infinity` in every state (its
 * output is unknown), since the checker relies on being able to move such operations to
 * the end of the linearization.
 */
export interface Model<S, I, O> {
  init(): S;
  /** Applies `input` in `state`; `ok` is false when the observed `output` is impossible there. */
  step(state: S, input: I, output: O): { ok: boolean; state: S };
  /** Canonical key of a state: equal hashes are treated as equal states. */
  hash(state: S): string;
  /** Human-readable state, used in failure explanations. */
  describe?(state: S): string;
  /** Human-readable operation, used in failure explanations. */
  describeOperation?(input: I, output: O): string;
  /**
   * True if the operation leaves the state unchanged in every state that accepts it
   * (a completed read, a rejected CAS). Lets the checker commit it without branching.
   */
  readOnly?(input: I, output: O): boolean;
  /**
   * True if no state reachable from `state` accepts this completed operation (e.g. a
   * read of version 3 once the version is 4, when versions only grow). Lets the checker
   * abandon a branch at once instead of at that operation's return, which matters most
   * when indefinite operations make many short-lived wrong branches possible.
   */
  neverAccepts?(state: S, input: I, output: O): boolean;
  /**
   * True if this indefinite operation leaves unchanged every state reachable from
   * `state` (e.g. a timed-out CAS whose expected version has gone by). Such an op counts
   * as spent when comparing configurations, which lets the memo prune more.
   */
  inert?(state: S, input: I, output: O): boolean;
  /**
   * Symmetry classes of indefinite operations, one entry per history operation (only
   * entries for `ret = Infinity` operations are used). Operations in the same class must
   * be interchangeable: swapping two of them in any valid linearization of `history`
   * keeps it valid, e.g. two timed-out writes of values nobody ever read. The checker
   * then only applies the earliest-called unapplied member of each class.
   */
  indefiniteClasses?(history: readonly Operation<I, O>[]): (string | undefined)[];
}

export interface CheckOptions {
  /** Give up (inconclusive: `ok: false, timedOut: true`) after this long. Default: no limit. */
  timeoutMs?: number;
}

/** An operation the search could have placed next at the point where it got stuck. */
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
  /**
   * An operation that cannot be placed after that prefix: its return was reached first,
   * or the model says no later state accepts it.
   */
  unplaced: Operation<I, O>;
  unplacedIndex: number;
  /** Operations that could have gone next after the prefix (called, not yet linearized). */
  candidates: Candidate<I, O>[];
  explanation: string;
}

export interface CheckResult<S, I, O> {
  /** True only when a linearization was found; false on violation *or* timeout. */
  ok: boolean;
  /**
   * Set when the search ran out of time: the history is neither proven good nor bad.
   * `failure` then describes the deepest dead end so far, as a hint only.
   */
  timedOut?: boolean;
  /**
   * History indices in linearization order. Indefinite operations after the last
   * completed one can equally be read as never having taken effect.
   */
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
  const search = new Search(model, history, opts.timeoutMs ?? Infinity);
  const outcome = search.run();
  if (outcome === "linearizable") return { ok: true, witness: search.witness() };
  if (outcome === "timeout") return { ok: false, timedOut: true, failure: search.explainFailure() };
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
  op: number;
}

/**
 * Sorts call/return events by time. At equal times calls come first so that operations
 * whose intervals merely touch count as concurrent: with coarse clocks, claiming a
 * real-time order we did not observe could report a false violation.
 */
function sortedEvents<I, O>(history: Operation<I, O>[]): Event[] {
  const events: Event[] = [];
  history.forEach((op, i) => {
    events.push({ time: op.call, isCall: true, op: i });
    events.push({ time: op.ret, isCall: false, op: i });
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

/** A configuration the search has entered: which ops are linearized, in some state. */
interface Visit {
  completed: Uint32Array;
  indefinite: Uint32Array;
  /** On the current search path; once not, the configuration is known to fail. */
  active: boolean;
}

/**
 * Lowe's memo of (linearized set, state) pairs, extended with dominance for indefinite
 * ops. A configuration is covered by a failed one with the same completed ops and state
 * whose applied indefinite ops are a subset of ours (ignoring ours that are inert): from
 * any completion of ours we could build one of theirs by appending the extra indefinite
 * ops at the end, so ours fails too. Plain equality is the special case Lowe describes.
 */
class VisitedConfigurations {
  private readonly buckets = new Map<string, Visit[]>();

  /**
   * Records the configuration and returns its visit, or undefined if it is covered.
   * `isInert(i)` says whether indefinite op slot `i` is inert in the configuration's state.
   */
  enter(
    completed: LinearizedSet,
    indefinite: LinearizedSet,
    stateHash: string,
    isInert: (slot: number) => boolean,
  ): Visit | undefined {
    // Zobrist collisions are rare but possible; exact comparison keeps the memo sound.
    const key = `${completed.h1}:${completed.h2}:${stateHash}`;
    let bucket = this.buckets.get(key);
    if (!bucket) this.buckets.set(key, bucket = []);
    for (const v of bucket) {
      if (v.active || !sameBits(v.completed, completed.bits)) continue;
      if (coveredBy(v.indefinite, indefinite.bits, isInert)) return undefined;
    }
    const visit = {
      completed: completed.bits.slice(),
      indefinite: indefinite.bits.slice(),
      active: true,
    };
    bucket.push(visit);
    return visit;
  }
}

/** Whether every op in `failed` is also in `current` or inert. */
function coveredBy(
  failed: Uint32Array,
  current: Uint32Array,
  isInert: (slot: number) => boolean,
): boolean {
  for (let w = 0; w < failed.length; w++) {
    let extra = failed[w] & ~current[w];
    while (extra !== 0) {
      const bit = 31 - Math.clz32(extra);
      if (!isInert(w * 32 + bit)) return false;
      extra &= ~(1 << bit);
    }
  }
  return true;
}

/**
 * Symmetry classes of indefinite operations, each a queue in call order. Only the head of
 * a queue may be applied. If a linearization applies a later member x while an earlier
 * one y is still unapplied, swapping x and y gives another valid linearization (y was
 * called no later than x, and the model declared them interchangeable), so exploring
 * heads only loses nothing and avoids trying every subset of the class.
 */
class SymmetryClasses {
  private readonly classOf: Int32Array;
  private readonly members: number[][] = [];
  private readonly applied: number[] = [];

  /** `keys[op]` is the class of op (if indefinite); ops without a key form no class. */
  constructor(keys: (string | undefined)[], indefinite: boolean[], callOrder: number[]) {
    this.classOf = new Int32Array(indefinite.length).fill(NIL);
    const ids = new Map<string, number>();
    for (const op of callOrder) {
      const key = keys[op];
      if (!indefinite[op] || key === undefined) continue;
      let id = ids.get(key);
      if (id === undefined) {
        id = this.members.length;
        ids.set(key, id);
        this.members.push([]);
        this.applied.push(0);
      }
      this.classOf[op] = id;
      this.members[id].push(op);
    }
  }

  isHead(op: number): boolean {
    const c = this.classOf[op];
    return c === NIL || this.members[c][this.applied[c]] === op;
  }

  /** Call when `op` is linearized (it must be the head) or un-linearized (the last applied). */
  shift(op: number, delta: 1 | -1): void {
    const c = this.classOf[op];
    if (c !== NIL) this.applied[c] += delta;
  }
}

/** Deepest point the search reached before having to backtrack. */
interface DeadEnd<S> {
  prefix: number[];
  state: S;
  stuckOp: number;
  /** Completed ops in the prefix: indefinite ones are guesses, so they do not count. */
  completed: number;
}

type Outcome = "linearizable" | "violation" | "timeout";

type Attempt<S> =
  | { kind: "applied"; state: S; hash: string }
  /** Not placed here; the search moves on to the next candidate. */
  | { kind: "skipped" }
  /** The current configuration cannot succeed; the search must backtrack. */
  | { kind: "doomed" };

/**
 * Candidates are tried in phases, each a full walk of the open calls. Read-only ops go
 * first because accepting one is a commitment, not a branch; then other completed ops,
 * which usually lead straight to a linearization; indefinite ops come last because the
 * model accepts them anywhere, and trying them early mostly builds chains of guesses that
 * the next completed op refutes.
 */
const enum Phase {
  ReadOnly = 0,
  Completed = 1,
  Indefinite = 2,
}

class Search<S, I, O> {
  // The event list, as parallel arrays indexed by node (node 0 is the head sentinel).
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** For a call node, its return node; NIL for return nodes. */
  private readonly match: Int32Array;
  private readonly nodeOp: Int32Array;
  private readonly events: Event[];

  private readonly indefinite: boolean[];
  private readonly phase: Phase[];
  private readonly classes: SymmetryClasses;
  private readonly completedTotal: number;
  /** Completed (finite `ret`) operations not yet linearized; 0 means success. */
  private completedLeft: number;

  /** Each op's index among the completed or among the indefinite ops. */
  private readonly slot: Int32Array;
  private readonly indefiniteOps: number[];
  private readonly linearizedCompleted: LinearizedSet;
  private readonly linearizedIndefinite: LinearizedSet;
  private readonly visited = new VisitedConfigurations();
  /** The linearization so far: call nodes, the state (and hash) before each, forced or not. */
  private readonly stackNodes: number[] = [];
  private readonly stackVisits: Visit[] = [];
  private readonly stackStates: S[] = [];
  private readonly stackHashes: string[] = [];
  private readonly stackForced: boolean[] = [];
  /** Where the search ended, set once it succeeds. */
  private final: { state: S } | undefined;
  private deepest: DeadEnd<S> | undefined;
  private readonly deadline: number;
  private timedOut = false;

  constructor(
    private readonly model: Model<S, I, O>,
    private readonly history: Operation<I, O>[],
    timeoutMs: number,
  ) {
    this.deadline = performance.now() + timeoutMs;
    this.indefinite = history.map((op) => op.ret === Infinity);
    const readOnly = history.map((op) => model.readOnly?.(op.input, op.output) ?? false);
    this.phase = history.map((_, i) =>
      this.indefinite[i] ? Phase.Indefinite : readOnly[i] ? Phase.ReadOnly : Phase.Completed
    );
    // An indefinite read-only op is accepted everywhere and changes nothing, so it never
    // needs placing: it is left out of the search and appended to the witness.
    const searched = history.map((_, i) => !(this.indefinite[i] && readOnly[i]));
    this.events = sortedEvents(history).filter((e) => searched[e.op]);
    const size = this.events.length + 1;
    this.next = new Int32Array(size);
    this.prev = new Int32Array(size);
    this.match = new Int32Array(size).fill(NIL);
    this.nodeOp = new Int32Array(size).fill(NIL);
    this.buildList();

    this.indefiniteOps = history.map((_, i) => i).filter((i) => this.indefinite[i]);
    this.completedTotal = history.length - this.indefiniteOps.length;
    this.completedLeft = this.completedTotal;
    this.slot = new Int32Array(history.length);
    let completed = 0;
    history.forEach((_, i) => this.slot[i] = this.indefinite[i] ? NIL : completed++);
    this.indefiniteOps.forEach((op, i) => this.slot[op] = i);
    this.linearizedCompleted = new LinearizedSet(this.completedTotal);
    this.linearizedIndefinite = new LinearizedSet(this.indefiniteOps.length);

    const keys = model.indefiniteClasses?.(history) ?? [];
    this.classes = new SymmetryClasses(keys, this.indefinite, this.callOrder());
  }

  private buildList(): void {
    const callNode = new Int32Array(this.history.length);
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

  /** Searched operations in the order of their call events. */
  private callOrder(): number[] {
    return this.events.filter((e) => e.isCall).map((e) => e.op);
  }

  run(): Outcome {
    let state = this.model.init();
    let hash = this.model.hash(state);
    let phase = Phase.ReadOnly;
    let node = this.next[HEAD];
    let steps = 0;
    // Once every completed operation is placed, the indefinite ones left over can all go
    // at the end (the model accepts them anywhere), so there is nothing left to search.
    while (this.completedLeft > 0) {
      if (++steps % TIMEOUT_CHECK_INTERVAL === 0 && performance.now() > this.deadline) {
        this.timedOut = true;
        return "timeout";
      }
      let attempt: Attempt<S>;
      if (this.match[node] === NIL) {
        // A return event ends the open calls: nothing after it may go first.
        if (phase !== Phase.Indefinite) {
          phase++;
          node = this.next[HEAD];
          continue;
        }
        // Its operation had to take effect by now and could not be placed.
        this.noteDeadEnd(this.nodeOp[node], state);
        attempt = { kind: "doomed" };
      } else if (phase === Phase.ReadOnly && this.isHopeless(node, state)) {
        attempt = { kind: "doomed" };
      } else if (this.phase[this.nodeOp[node]] !== phase) {
        attempt = { kind: "skipped" };
      } else {
        attempt = this.tryLinearize(node, state, hash);
      }

      if (attempt.kind === "applied") {
        state = attempt.state;
        hash = attempt.hash;
        phase = Phase.ReadOnly;
        node = this.next[HEAD];
      } else if (attempt.kind === "skipped") {
        node = this.next[node];
      } else {
        const resumed = this.backtrack();
        if (!resumed) return "violation";
        ({ state, hash } = resumed);
        phase = this.phase[this.nodeOp[resumed.node]];
        node = this.next[resumed.node];
      }
    }
    this.final = { state };
    return "linearizable";
  }

  /**
   * Whether the open completed op at `node` can never be placed from `state`, which
   * dooms the configuration. Checked during the first walk of each configuration only.
   */
  private isHopeless(node: number, state: S): boolean {
    const op = this.nodeOp[node];
    if (this.indefinite[op] || !this.model.neverAccepts) return false;
    const { input, output } = this.history[op];
    if (!this.model.neverAccepts(state, input, output)) return false;
    this.noteDeadEnd(op, state);
    return true;
  }

  /** Tries to linearize the operation whose call event is `node`, in `state`. */
  private tryLinearize(node: number, state: S, hash: string): Attempt<S> {
    const op = this.nodeOp[node];
    if (!this.classes.isHead(op)) return { kind: "skipped" };
    const { input, output } = this.history[op];
    const result = this.model.step(state, input, output);
    if (!result.ok) return { kind: "skipped" };
    const unchanged = result.state === state;
    const newHash = unchanged ? hash : this.model.hash(result.state);
    // An indefinite op that changes nothing here is better placed at the very end, where
    // it is equally harmless, than spent now: deferring it never loses a linearization.
    if (this.indefinite[op] && newHash === hash) return { kind: "skipped" };
    // A read-only op that is callable and accepted can be moved to the front of any
    // linearization of the remaining ops (nothing remaining returned before it was called,
    // and removing it elsewhere changes no state), so no alternative needs exploring.
    const forced = this.phase[op] === Phase.ReadOnly;
    this.toggleLinearized(op);
    const visit = this.visited.enter(
      this.linearizedCompleted,
      this.linearizedIndefinite,
      newHash,
      (slot) => this.isInert(result.state, this.indefiniteOps[slot]),
    );
    if (!visit) {
      this.toggleLinearized(op);
      return forced ? { kind: "doomed" } : { kind: "skipped" };
    }
    this.push(node, state, hash, forced, visit);
    return { kind: "applied", state: result.state, hash: newHash };
  }

  private isInert(state: S, op: number): boolean {
    const { input, output } = this.history[op];
    return this.model.inert?.(state, input, output) ?? false;
  }

  private toggleLinearized(op: number): void {
    if (this.indefinite[op]) this.linearizedIndefinite.toggle(this.slot[op]);
    else this.linearizedCompleted.toggle(this.slot[op]);
  }

  private push(node: number, state: S, hash: string, forced: boolean, visit: Visit): void {
    const op = this.nodeOp[node];
    this.stackNodes.push(node);
    this.stackVisits.push(visit);
    this.stackStates.push(state);
    this.stackHashes.push(hash);
    this.stackForced.push(forced);
    this.classes.shift(op, 1);
    if (!this.indefinite[op]) this.completedLeft--;
    this.lift(node);
  }

  /**
   * Undoes linearizations until one that had alternatives: a forced op failing means the
   * configuration it was forced from fails too. Returns the call node to continue after,
   * with the state before it, or undefined when the history is exhausted.
   */
  private backtrack(): { node: number; state: S; hash: string } | undefined {
    for (;;) {
      const node = this.stackNodes.pop();
      if (node === undefined) return undefined;
      const state = this.stackStates.pop()!;
      const hash = this.stackHashes.pop()!;
      const forced = this.stackForced.pop()!;
      this.stackVisits.pop()!.active = false;
      const op = this.nodeOp[node];
      this.toggleLinearized(op);
      this.classes.shift(op, -1);
      if (!this.indefinite[op]) this.completedLeft++;
      this.unlift(node);
      if (!forced) return { node, state, hash };
    }
  }

  /** Removes a call event and its return from the list (they stay linked to their neighbours). */
  private lift(call: number): void {
    this.unlink(call);
    this.unlink(this.match[call]);
  }

  /** Reinserts what `lift` removed, in reverse order so the neighbour links are valid. */
  private unlift(call: number): void {
    this.relink(this.match[call]);
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

  /**
   * Remembers the dead end with the most completed ops linearized and, among those, the
   * fewest indefinite ones applied: the simplest story closest to the violation.
   */
  private noteDeadEnd(stuckOp: number, state: S): void {
    const completed = this.completedTotal - this.completedLeft;
    const best = this.deepest;
    if (best) {
      if (best.completed > completed) return;
      if (best.completed === completed && best.prefix.length <= this.stackNodes.length) return;
    }
    const prefix = this.stackNodes.map((n) => this.nodeOp[n]);
    this.deepest = { prefix, state, stuckOp, completed };
  }

  /**
   * The linearization found, completed with the leftover indefinite ops in call order.
   * Stepping them also checks the model contract that makes appending them valid.
   */
  witness(): number[] {
    const order = this.stackNodes.map((n) => this.nodeOp[n]);
    const placed = new Set(order);
    let state = this.final!.state;
    for (const { op, isCall } of sortedEvents(this.history)) {
      if (!isCall || placed.has(op)) continue;
      const { input, output } = this.history[op];
      const result = this.model.step(state, input, output);
      if (!result.ok) {
        throw new Error(
          `model rejected indefinite operation #${op}; ops with ret = Infinity must be ` +
            `accepted in every state`,
        );
      }
      state = result.state;
      order.push(op);
    }
    return order;
  }

  /** Describes the deepest dead end (undefined if a timeout came before any). */
  explainFailure(): Failure<S, I, O> | undefined {
    const dead = this.deepest;
    if (!dead) return undefined;
    const candidates = this.openOperationsAt(dead).map((index): Candidate<I, O> => {
      const op = this.history[index];
      return { index, op, accepted: this.model.step(dead.state, op.input, op.output).ok };
    });
    const failure = {
      longestPrefix: dead.prefix.map((i) => this.history[i]),
      longestPrefixIndices: dead.prefix,
      stateAfterPrefix: dead.state,
      unplaced: this.history[dead.stuckOp],
      unplacedIndex: dead.stuckOp,
      candidates,
    };
    return { ...failure, explanation: this.describeFailure(failure) };
  }

  /**
   * Operations not in the prefix whose call precedes the first return of an op not in the
   * prefix: the ones the search could have tried next at the dead end.
   */
  private openOperationsAt(dead: DeadEnd<S>): number[] {
    const inPrefix = new Set(dead.prefix);
    const open: number[] = [];
    for (const event of this.events) {
      if (inPrefix.has(event.op)) continue;
      if (!event.isCall) break;
      open.push(event.op);
    }
    return open;
  }

  private describeFailure(f: Omit<Failure<S, I, O>, "explanation">): string {
    const state = this.model.describe?.(f.stateAfterPrefix) ?? JSON.stringify(f.stateAfterPrefix);
    const tail = f.longestPrefixIndices.slice(-10);
    const verdict = this.timedOut
      ? "inconclusive (timed out); deepest dead end so far"
      : "not linearizable";
    const lines = [
      `${verdict}: longest linearizable prefix has ${f.longestPrefix.length} of ` +
      `${this.history.length} operations, leaving state ${state}`,
    ];
    if (tail.length > 0) {
      lines.push(`  last ${tail.length} linearized:`);
      for (const i of tail) lines.push(`    ${this.describeOp(i)}`);
    }
    lines.push(`  could not place ${this.describeOp(f.unplacedIndex)}`);
    const completed = f.candidates.filter((c) => !this.indefinite[c.index]);
    lines.push(`  completed operations that could go next (model verdict in that state):`);
    for (const c of completed) {
      const verdict = c.accepted ? "accepted, but only leads to dead ends" : "rejected";
      lines.push(`    ${this.describeOp(c.index)}: ${verdict}`);
    }
    lines.push(...this.describePendingIndefinite(f));
    return lines.join("\n");
  }

  /** Indefinite ops that could still take effect; inert ones would only add noise. */
  private describePendingIndefinite(f: Omit<Failure<S, I, O>, "explanation">): string[] {
    const pending = f.candidates.filter((c) =>
      this.indefinite[c.index] && !this.isInert(f.stateAfterPrefix, c.index)
    );
    if (pending.length === 0) return [];
    const shown = pending.slice(0, 10).map((c) => `    ${this.describeOp(c.index)}`);
    const more = pending.length > shown.length
      ? [`    ... ${pending.length - shown.length} more`]
      : [];
    return [
      `  pending indefinite operations (may take effect at any later point):`,
      ...shown,
      ...more,
    ];
  }

  private describeOp(index: number): string {
    const op = this.history[index];
    const body = this.model.describeOperation?.(op.input, op.output) ??
      `${JSON.stringify(op.input)} -> ${JSON.stringify(op.output)}`;
    const ret = Number.isFinite(op.ret) ? formatTime(op.ret) : "never";
    return `#${index} client ${op.client} [${formatTime(op.call)}, ${ret}] ${body}`;
  }
}

/** Timestamps from `performance.now()` carry sub-microsecond noise; keep 3 decimals. */
function formatTime(t: number): string {
  return Number.isInteger(t) ? String(t) : t.toFixed(3);
}
