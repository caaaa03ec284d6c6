/**
 * Unit tests for the WGL checker and the versioned-config model, on hand-built and
 * generated histories (no cluster needed).
 */
import { assert, assertEquals, assertThrows } from "../../core/testing/assert.ts";
import {
  type ConfigInput,
  type ConfigModel,
  type ConfigOutput,
  configRegisterModel,
  type ConfigState,
} from "./config_register.ts";
import { checkLinearizable, type Operation } from "./wgl.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

type Op = Operation<ConfigInput, ConfigOutput>;

const INITIAL: ConfigState = { version: 5, value: "init" };
const model = configRegisterModel(INITIAL);
const UNKNOWN = { unknown: true } as const;

// --- tiny history builders: [call, ret] intervals; ret = Infinity for indefinite ops ---

function read(client: number, call: number, ret: number, version: number, value: string): Op {
  return { client, call, ret, input: { type: "read" }, output: { version, value } };
}

function write(client: number, call: number, ret: number, value: string, version: number): Op {
  return { client, call, ret, input: { type: "write", value }, output: { version } };
}

function cas(
  client: number,
  call: number,
  ret: number,
  expectVersion: number,
  value: string,
  output: ConfigOutput,
): Op {
  return { client, call, ret, input: { type: "cas", expectVersion, value }, output };
}

function unknownWrite(client: number, call: number, value: string): Op {
  return { client, call, ret: Infinity, input: { type: "write", value }, output: UNKNOWN };
}

function check(history: Op[]) {
  return checkLinearizable(model, history);
}

function assertLinearizable(history: Op[]): number[] {
  const result = check(history);
  assert(result.ok, result.failure?.explanation ?? "timed out");
  return result.witness!;
}

function assertViolation(history: Op[]) {
  const result = check(history);
  assert(!result.ok, "expected a violation");
  assert(!result.timedOut, "expected a verdict, not a timeout");
  return result.failure!;
}

// --- linearizable histories ---

testWithTimeout({ name: "empty history is linearizable", timeoutMs: 2 * MINUTE }, () => {
  assertEquals(assertLinearizable([]), []);
});

testWithTimeout({
  name: "sequential history is linearizable in real-time order",
  timeoutMs: 2 * MINUTE,
}, () => {
  const witness = assertLinearizable([
    read(0, 0, 1, 5, "init"),
    write(0, 2, 3, "a", 6),
    read(1, 4, 5, 6, "a"),
    cas(1, 6, 7, 6, "b", { ok: true, version: 7 }),
    cas(0, 8, 9, 6, "c", { ok: false }),
    read(0, 10, 11, 7, "b"),
  ]);
  assertEquals(witness, [0, 1, 2, 3, 4, 5]);
});

testWithTimeout({
  name: "concurrent writes may take effect in the opposite order to their calls",
  timeoutMs: 2 * MINUTE,
}, () => {
  const witness = assertLinearizable([
    write(0, 0, 10, "a", 7), // called first, applied second
    write(1, 1, 5, "b", 6),
    read(2, 6, 7, 6, "b"),
    read(2, 11, 12, 7, "a"),
  ]);
  assertEquals(witness, [1, 2, 0, 3]);
});

testWithTimeout({
  name: "a read concurrent with a write may see either value",
  timeoutMs: 2 * MINUTE,
}, () => {
  for (const [version, value] of [[5, "init"], [6, "a"]] as const) {
    assertLinearizable([write(0, 0, 10, "a", 6), read(1, 2, 3, version, value)]);
  }
});

testWithTimeout(
  { name: "intervals that only touch count as concurrent", timeoutMs: 2 * MINUTE },
  () => {
    // With a coarse clock, ret == call does not prove the write finished first.
    assertLinearizable([write(0, 0, 5, "a", 6), read(1, 5, 6, 5, "init")]);
  },
);

testWithTimeout({
  name: "a CAS conflict is fine once another write has moved the version",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertLinearizable([
    write(0, 0, 1, "a", 6),
    cas(1, 2, 3, 5, "b", { ok: false }),
    cas(1, 4, 5, 6, "b", { ok: true, version: 7 }),
  ]);
});

testWithTimeout({
  name: "many fully overlapping operations are checked quickly thanks to memoization",
  timeoutMs: 2 * MINUTE,
}, () => {
  const history: Op[] = [];
  for (let i = 0; i < 12; i++) history.push(write(i, 0, 100, `w${i}`, 6 + i));
  for (let i = 0; i < 12; i++) {
    history.push(read(20 + i, 1, 99, 5 + i, i === 0 ? "init" : `w${i - 1}`));
  }
  assertLinearizable(history);
});

// --- classic violations ---

testWithTimeout({
  name: "stale read after a completed write is a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  const failure = assertViolation([write(0, 0, 1, "a", 6), read(1, 2, 3, 5, "init")]);
  assertEquals(failure.longestPrefixIndices, [0]);
  assertEquals(failure.unplacedIndex, 1);
  assertEquals(failure.stateAfterPrefix, { version: 6, value: "a" });
  const explanation = failure.explanation;
  assert(explanation.includes('could not place #1 client 1 [2, 3] read -> v5="init"'), explanation);
  assert(explanation.includes('leaving state v6="a"'), explanation);
});

testWithTimeout({
  name: "reading a value that was never written is a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  const failure = assertViolation([
    write(0, 0, 10, "a", 6),
    read(1, 1, 2, 6, "nope"),
  ]);
  assertEquals(failure.longestPrefixIndices, [0]);
  assertEquals(failure.unplacedIndex, 1);
  const verdicts = failure.candidates.map((c) => [c.index, c.accepted]);
  assertEquals(verdicts, [[1, false]]);
});

testWithTimeout({
  name: "two CAS succeeding against the same version is a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  const failure = assertViolation([
    cas(0, 0, 10, 5, "a", { ok: true, version: 6 }),
    cas(1, 1, 11, 5, "b", { ok: true, version: 6 }),
  ]);
  assertEquals(failure.longestPrefix.length, 1);
});

testWithTimeout({
  name: "a CAS may not claim a version other than expected + 1",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertViolation([cas(0, 0, 1, 5, "a", { ok: true, version: 7 })]);
});

testWithTimeout({
  name: "a CAS conflict while the version definitely matched is a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertViolation([read(0, 0, 1, 5, "init"), cas(1, 2, 3, 5, "a", { ok: false })]);
});

testWithTimeout({
  name: "version going backwards between two reads is a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertViolation([
    write(0, 0, 1, "a", 6),
    write(1, 0, 100, "b", 7), // concurrent with everything below
    read(2, 10, 11, 7, "b"),
    read(2, 20, 21, 6, "a"),
  ]);
});

testWithTimeout({
  name: "two writes reporting the same version is a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertViolation([write(0, 0, 10, "a", 6), write(1, 0, 10, "b", 6)]);
});

// --- indefinite operations ---

testWithTimeout(
  { name: "an indefinite write may have taken effect", timeoutMs: 2 * MINUTE },
  () => {
    assertLinearizable([unknownWrite(0, 0, "a"), read(1, 50, 51, 6, "a")]);
  },
);

testWithTimeout(
  { name: "an indefinite write may never have taken effect", timeoutMs: 2 * MINUTE },
  () => {
    assertLinearizable([
      unknownWrite(0, 0, "a"),
      read(1, 50, 51, 5, "init"),
      write(1, 60, 61, "b", 6),
      read(1, 70, 71, 6, "b"),
    ]);
  },
);

testWithTimeout({
  name: "an indefinite write may take effect long after its call",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertLinearizable([
    unknownWrite(0, 0, "a"),
    read(1, 50, 51, 5, "init"),
    read(1, 60, 61, 6, "a"),
  ]);
});

testWithTimeout({
  name: "an indefinite write cannot be observed and then un-observed",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertViolation([
    unknownWrite(0, 0, "a"),
    read(1, 50, 51, 6, "a"),
    read(1, 60, 61, 5, "init"),
  ]);
});

testWithTimeout({
  name: "an indefinite write cannot take effect before it was called",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertViolation([read(1, 0, 1, 6, "a"), unknownWrite(0, 2, "a")]);
});

testWithTimeout({
  name: "an indefinite CAS may or may not have taken effect",
  timeoutMs: 2 * MINUTE,
}, () => {
  const pending = cas(0, 0, Infinity, 5, "a", UNKNOWN);
  assertLinearizable([pending, read(1, 10, 11, 6, "a")]);
  assertLinearizable([pending, read(1, 10, 11, 5, "init")]);
  // It cannot succeed against a version that has already moved on.
  assertViolation([write(1, 0, 1, "b", 6), pending, read(1, 10, 11, 7, "a")]);
});

testWithTimeout({
  name: "indefinite operations that changed nothing go at the end of the witness",
  timeoutMs: 2 * MINUTE,
}, () => {
  const lostRead: Op = {
    client: 1,
    call: 0,
    ret: Infinity,
    input: { type: "read" },
    output: UNKNOWN,
  };
  assertEquals(assertLinearizable([lostRead, write(0, 1, 2, "a", 6)]), [1, 0]);
});

testWithTimeout({
  name: "dozens of timed-out writes are resolved without trying every subset",
  timeoutMs: 2 * MINUTE,
}, () => {
  // 40 writes time out; a later write reports a version implying 20 of them happened.
  const lost = Array.from({ length: 40 }, (_, i) => unknownWrite(i, i, `lost${i}`));
  const after = [write(50, 100, 101, "k", 26), read(51, 200, 201, 26, "k")];
  assertLinearizable([...lost, ...after]);
  const failure = assertViolation([...lost, ...after, read(52, 300, 301, 25, "lost3")]);
  assertEquals(failure.unplacedIndex, 42);
});

// --- input validation and timeouts ---

testWithTimeout({ name: "malformed intervals are rejected", timeoutMs: 2 * MINUTE }, () => {
  assertThrows(() => check([read(0, 5, 4, 5, "init")]), /ret \(4\) must be >= call \(5\)/);
  assertThrows(() => check([read(0, Infinity, Infinity, 5, "init")]), /call must be finite/);
});

testWithTimeout({
  name: "a search that runs out of time is inconclusive, not a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  const { history } = generateHistory(new Rng(7), { clients: 10, ops: 3000 });
  const result = checkLinearizable(model, history, { timeoutMs: 0 });
  assertEquals([result.ok, result.timedOut, result.witness], [false, true, undefined]);
  // Whatever dead end was reached so far is offered as a hint, clearly labelled.
  if (result.failure) assert(result.failure.explanation.startsWith("inconclusive"));
});

// --- generated histories ---

testWithTimeout({
  name: "randomized: histories from a real sequential execution pass, corrupted ones fail",
  timeoutMs: 2 * MINUTE,
}, () => {
  for (let seed = 1; seed <= 60; seed++) {
    const rng = new Rng(seed);
    const generated = generateHistory(rng, {
      clients: 2 + rng.int(9),
      ops: 20 + rng.int(200),
      indefiniteRate: 0.05,
    });
    const ok = checkLinearizable(model, generated.history);
    assert(ok.ok, `seed ${seed}: ${ok.failure?.explanation}`);

    const corrupted = corruptOneRead(rng, generated);
    if (!corrupted) continue;
    const bad = checkLinearizable(model, corrupted.history);
    assert(!bad.ok && !bad.timedOut, `seed ${seed}: corruption (${corrupted.how}) went unnoticed`);
  }
});

testWithTimeout({
  name: "agrees with brute-force search on small random histories",
  timeoutMs: 2 * MINUTE,
}, () => {
  // The same model without its optional hooks: plain WGL plus the generic reductions.
  const plain: ConfigModel = {
    init: model.init,
    step: model.step,
    hash: model.hash,
  };
  let violations = 0;
  for (let seed = 1; seed <= 3000; seed++) {
    const history = randomSmallHistory(new Rng(seed));
    const expected = bruteForceLinearizable(history);
    for (const m of [model, plain]) {
      const result = checkLinearizable(m, history);
      assertEquals(result.ok, expected, `seed ${seed}: ${JSON.stringify(history)}`);
      if (result.ok) assertValidWitness(history, result.witness!);
    }
    if (!expected) violations++;
  }
  // Both verdicts must be well represented for the comparison to mean anything.
  assert(violations > 750 && violations < 2250, `${violations} violations`);
});

testWithTimeout({
  name: "performance: a 3000-operation history from 10 clients is checked",
  timeoutMs: 2 * MINUTE,
}, () => {
  const generated = generateHistory(new Rng(42), {
    clients: 10,
    ops: 3000,
    indefiniteRate: 0.01,
  });
  const { history } = generated;
  const start = performance.now();
  const result = checkLinearizable(model, history);
  const ms = Math.round(performance.now() - start);
  console.log(`checked ${history.length} operations in ${ms} ms`);
  assert(result.ok, result.failure?.explanation ?? "timed out");

  // Refuting a violation at the very end means exhausting the whole search space.
  const corrupted = [...history];
  const last = corrupted.findLastIndex((op) => op.input.type === "read" && op.ret < Infinity);
  corrupted[last] = { ...corrupted[last], output: { version: 6, value: "corrupt" } };
  const refuteStart = performance.now();
  const refuted = checkLinearizable(model, corrupted);
  const refuteMs = Math.round(performance.now() - refuteStart);
  console.log(`refuted a copy with its last read corrupted in ${refuteMs} ms`);
  assert(!refuted.ok && !refuted.timedOut);
  assertEquals(refuted.failure!.unplacedIndex, last);
});

/** Seeded PRNG (mulberry32) so failing seeds can be replayed. */
class Rng {
  private a: number;
  constructor(seed: number) {
    this.a = seed >>> 0;
  }
  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

interface PlannedOp {
  client: number;
  call: number;
  /** The instant the "real" system applies it: always inside [call, ret]. */
  at: number;
  ret: number;
  kind: ConfigInput["type"];
  indefinite: boolean;
}

interface GeneratedHistory {
  history: Op[];
  /** State after each version the execution produced (including the initial one). */
  states: Map<number, ConfigState>;
}

/**
 * Plans per-client sequences of overlapping intervals, then executes the operations on a
 * real register in order of their chosen instants: the result is linearizable by
 * construction. Indefinite operations either were applied or were lost, at random.
 */
function generateHistory(
  rng: Rng,
  opts: { clients: number; ops: number; indefiniteRate?: number },
): GeneratedHistory {
  const planned = planOperations(rng, opts.clients, opts.ops, opts.indefiniteRate ?? 0);
  let state = { ...INITIAL };
  const states = new Map([[state.version, state]]);
  const history: Op[] = [];
  let serial = 0;
  for (const p of [...planned].sort((a, b) => a.at - b.at)) {
    const input = chooseInput(rng, p.kind, state, `v${serial++}`);
    const applied = !p.indefinite || rng.next() < 0.5;
    const { state: after, output } = execute(state, input);
    if (applied) state = after;
    states.set(state.version, state);
    const ret = p.indefinite ? Infinity : p.ret;
    history.push({
      client: p.client,
      call: p.call,
      ret,
      input,
      output: p.indefinite ? UNKNOWN : output,
    });
  }
  // Present the history in an order unrelated to the linearization.
  history.sort((a, b) => a.call - b.call);
  return { history, states };
}

function planOperations(
  rng: Rng,
  clients: number,
  total: number,
  indefiniteRate: number,
): PlannedOp[] {
  const planned: PlannedOp[] = [];
  const clock = Array.from({ length: clients }, () => rng.next() * 5);
  for (let i = 0; i < total; i++) {
    const client = i % clients;
    const call = clock[client] + rng.next() * 3;
    const at = call + rng.next() * 10;
    const ret = at + rng.next() * 10;
    clock[client] = ret;
    const kinds = ["read", "read", "write", "cas"] as const;
    const kind = kinds[rng.int(kinds.length)];
    planned.push({ client, call, at, ret, kind, indefinite: rng.next() < indefiniteRate });
  }
  return planned;
}

function chooseInput(rng: Rng, kind: ConfigInput["type"], state: ConfigState, value: string) {
  if (kind === "read") return { type: "read" } as const;
  if (kind === "write") return { type: "write", value } as const;
  // Mostly the current version (success), sometimes a stale one (conflict).
  const expectVersion = state.version - (rng.next() < 0.7 ? 0 : 1 + rng.int(2));
  return { type: "cas", expectVersion, value } as const;
}

function execute(
  state: ConfigState,
  input: ConfigInput,
): { state: ConfigState; output: ConfigOutput } {
  switch (input.type) {
    case "read":
      return { state, output: { ...state } };
    case "write": {
      const next = { version: state.version + 1, value: input.value };
      return { state: next, output: { version: next.version } };
    }
    case "cas": {
      if (input.expectVersion !== state.version) return { state, output: { ok: false } };
      const next = { version: state.version + 1, value: input.value };
      return { state: next, output: { ok: true, version: next.version } };
    }
  }
}

/**
 * Changes one completed read so that no linearization can explain it:
 * - "never written": a value no operation wrote;
 * - "stale": the state one version before a write that completed before the read began
 *   (versions only grow, so the read must see at least that write's version);
 * - "future": the state produced by a write that was called after the read returned.
 */
function corruptOneRead(
  rng: Rng,
  { history, states }: GeneratedHistory,
): { history: Op[]; how: string } | undefined {
  const reads = history
    .map((op, i) => ({ op, i }))
    .filter(({ op }) => op.input.type === "read" && !("unknown" in op.output));
  if (reads.length === 0) return undefined;
  const { op: target, i } = reads[rng.int(reads.length)];
  const observed = target.output as ConfigState;
  const writes = history.filter((op) => op.input.type !== "read" && versionOf(op) !== undefined);

  const staleFrom = writes.find((w) => w.ret < target.call && versionOf(w)! > INITIAL.version);
  const futureFrom = writes.find((w) => w.call > target.ret);
  const options: { how: string; output: ConfigState }[] = [
    { how: "never written", output: { version: observed.version, value: "corrupt" } },
  ];
  if (staleFrom) {
    options.push({ how: "stale", output: states.get(versionOf(staleFrom)! - 1)! });
  }
  if (futureFrom) options.push({ how: "future", output: states.get(versionOf(futureFrom)!)! });
  const choice = options[rng.int(options.length)];

  const corrupted = [...history];
  corrupted[i] = { ...target, output: { ...choice.output } };
  return { history: corrupted, how: choice.how };
}

/** The version a write/CAS reports creating, if it definitely succeeded. */
function versionOf(op: Op): number | undefined {
  const out = op.output as { version?: number; ok?: boolean; unknown?: true };
  if (out.unknown || out.ok === false) return undefined;
  return out.version;
}

/**
 * Up to 8 ops from a real execution, with times rounded (so that intervals touch) and
 * 0-2 outputs replaced at random: roughly half end up not linearizable.
 */
function randomSmallHistory(rng: Rng): Op[] {
  const { history } = generateHistory(rng, {
    clients: 1 + rng.int(4),
    ops: 1 + rng.int(8),
    indefiniteRate: 0.25,
  });
  // Rounding is monotone, so it never invents a real-time order that was not there.
  const rounded = history.map((op) => ({
    ...op,
    call: Math.round(op.call),
    ret: Math.round(op.ret),
  }));
  const values = [
    "init",
    "other",
    ...rounded.flatMap((op) => "value" in op.input ? [op.input.value] : []),
  ];
  for (let k = rng.int(3); k > 0; k--) {
    const i = rng.int(rounded.length);
    rounded[i] = mutateOutput(rng, rounded[i], values);
  }
  return rounded;
}

function mutateOutput(rng: Rng, op: Op, values: string[]): Op {
  if (rng.next() < 0.2) return { ...op, ret: Infinity, output: UNKNOWN };
  // A known output needs a return time; an indefinite op gets one.
  if (op.ret === Infinity) op = { ...op, ret: op.call + rng.int(6) };
  const version = INITIAL.version + rng.int(5);
  switch (op.input.type) {
    case "read":
      return { ...op, output: { version, value: values[rng.int(values.length)] } };
    case "write":
      return { ...op, output: { version } };
    case "cas":
      return { ...op, output: rng.next() < 0.5 ? { ok: false } : { ok: true, version } };
  }
}

/**
 * The definition, searched exhaustively: some order of the ops respecting real time
 * (a precedes b iff a.ret < b.call) is accepted by the model, where indefinite ops may
 * also be left out.
 */
function bruteForceLinearizable(history: Op[]): boolean {
  const failed = new Set<string>();
  const search = (remaining: number[], state: ConfigState): boolean => {
    if (remaining.every((i) => history[i].ret === Infinity)) return true;
    const key = `${remaining.join(",")}|${model.hash(state)}`;
    if (failed.has(key)) return false;
    for (const i of remaining) {
      const op = history[i];
      if (remaining.some((j) => history[j].ret < op.call)) continue;
      const rest = remaining.filter((j) => j !== i);
      const result = model.step(state, op.input, op.output);
      if (result.ok && search(rest, result.state)) return true;
      if (op.ret === Infinity && search(rest, state)) return true;
    }
    failed.add(key);
    return false;
  };
  return search(history.map((_, i) => i), model.init());
}

/** The witness is a permutation of the history that respects real time and the model. */
function assertValidWitness(history: Op[], witness: number[]): void {
  assertEquals([...witness].sort((a, b) => a - b), history.map((_, i) => i));
  let state = model.init();
  witness.forEach((i, pos) => {
    const op = history[i];
    for (const later of witness.slice(pos + 1)) {
      assert(!(history[later].ret < op.call), `witness puts #${i} after #${later} returned`);
    }
    const result = model.step(state, op.input, op.output);
    assert(result.ok, `witness step #${i} rejected`);
    state = result.state;
  });
}
