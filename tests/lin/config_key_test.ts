/**
 * Unit tests for the per-key configuration model: per-key projections of a real
 * multi-key execution (one shared version counter) pass, and stale or impossible
 * observations fail.
 */
import { assert, assertEquals } from "../../core/testing/assert.ts";
import {
  configKeyModel,
  type ConfigValue,
  type KeyInput,
  type KeyModel,
  type KeyOutput,
} from "./config_key.ts";
import { checkLinearizable, type Operation } from "./wgl.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

type Op = Operation<KeyInput, KeyOutput>;

const model = configKeyModel({ version: 5, value: "init" });
const UNKNOWN = { unknown: true } as const;

function read(call: number, ret: number, version: number, value: ConfigValue): Op {
  return { client: 0, call, ret, input: { type: "read" }, output: { version, value } };
}

function write(call: number, ret: number, value: ConfigValue, version: number): Op {
  return { client: 1, call, ret, input: { type: "write", value }, output: { version } };
}

function cas(call: number, ret: number, expectVersion: number, value: string, out: KeyOutput): Op {
  return { client: 2, call, ret, input: { type: "cas", expectVersion, value }, output: out };
}

function verdict(history: Op[], m: KeyModel = model): boolean {
  const result = checkLinearizable(m, history, { timeoutMs: 10_000 });
  assert(!result.timedOut, "checker timed out");
  return result.ok;
}

testWithTimeout({
  name: "per-key model: other keys' writes may move the version between this key's ops",
  timeoutMs: 2 * MINUTE,
}, () => {
  assert(verdict([
    write(0, 1, "x", 9), // versions 6..8 went to other keys
    read(2, 3, 12, "x"),
    cas(4, 5, 12, "y", { ok: true, version: 13 }),
    read(6, 7, 20, "y"),
  ]));
});

testWithTimeout({
  name: "per-key model: a read older than a finished write of the key is a violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  assert(!verdict([write(0, 1, "x", 9), read(2, 3, 5, "init")]), "stale value and version");
  assert(!verdict([write(0, 1, "x", 9), read(2, 3, 12, "init")]), "stale value, newer version");
  assert(!verdict([write(0, 1, "x", 9), read(2, 3, 8, "x")]), "version below the write's");
});

testWithTimeout({
  name: "per-key model: versions of this key's writes must grow",
  timeoutMs: 2 * MINUTE,
}, () => {
  assert(!verdict([write(0, 1, "x", 9), write(2, 3, "y", 9)]));
  assert(!verdict([write(0, 1, "x", 9), write(2, 3, "y", 7)]));
  assert(
    !verdict([write(0, 1, "x", 9), cas(2, 3, 8, "y", { ok: true, version: 9 })]),
    "a CAS that expected a version already passed cannot succeed",
  );
  assert(!verdict([cas(0, 1, 7, "y", { ok: true, version: 9 })]), "a CAS makes expected + 1");
});

testWithTimeout({
  name: "per-key model: a CAS conflict is always possible, indefinite ops either way",
  timeoutMs: 2 * MINUTE,
}, () => {
  assert(verdict([cas(0, 1, 5, "y", { ok: false }), read(2, 3, 5, "init")]));
  const lostWrite = { ...write(0, 1, "x", 0), ret: Infinity, output: UNKNOWN };
  assert(verdict([lostWrite, read(2, 3, 7, "init")]), "the write may not have happened");
  assert(verdict([lostWrite, read(2, 3, 7, "x")]), "or it may have");
  assert(!verdict([lostWrite, read(2, 3, 7, "x"), read(4, 5, 8, "init")]), "but not undone");
});

testWithTimeout({
  name: "per-key model: projections of real multi-key executions pass, stale reads fail",
  timeoutMs: 2 * MINUTE,
}, () => {
  let caught = 0;
  for (let seed = 1; seed <= 80; seed++) {
    const rng = new Rng(seed);
    const { perKey, staleCandidates } = generateMultiKeyHistory(rng, 300);
    for (const [key, history] of perKey) {
      const m = configKeyModel({ version: 0, value: `${key}-init` });
      assert(verdict(history, m), `seed ${seed} key ${key}`);
    }
    const stale = staleCandidates[rng.int(staleCandidates.length)];
    if (!stale) continue;
    const history = [...perKey.get(stale.key)!];
    history[stale.index] = { ...history[stale.index], output: stale.staleOutput };
    assert(!verdict(history, configKeyModel({ version: 0, value: `${stale.key}-init` })));
    caught++;
  }
  assert(caught > 40, `only ${caught} seeds had a stale read to plant`);
});

testWithTimeout({
  name: "per-key model: the optional hooks never change a verdict",
  timeoutMs: 2 * MINUTE,
}, () => {
  const plain: KeyModel = { init: model.init, step: model.step, hash: model.hash };
  let violations = 0;
  for (let seed = 1; seed <= 1500; seed++) {
    const rng = new Rng(seed);
    const { perKey } = generateMultiKeyHistory(rng, 10, 0.2);
    const [key, history] = [...perKey][0];
    const mutated = history.map((op) => rng.next() < 0.15 ? mutate(rng, op) : op);
    const withHooks = configKeyModel({ version: 0, value: `${key}-init` });
    const withoutHooks = { ...plain, init: withHooks.init };
    const expected = verdict(mutated, withoutHooks);
    assertEquals(verdict(mutated, withHooks), expected, `seed ${seed}`);
    if (!expected) violations++;
  }
  assert(violations > 100 && violations < 1400, `${violations} violations`);
});

// --- a real execution of several keys sharing one version counter ---

const KEYS = ["a", "b", "c"];

interface StaleCandidate {
  key: string;
  /** Index in that key's history of a read that can be made stale. */
  index: number;
  staleOutput: KeyOutput;
}

function generateMultiKeyHistory(rng: Rng, total: number, indefiniteRate = 0.05) {
  const planned = Array.from({ length: total }, (_, i) => {
    const call = i * 2 + rng.next() * 20;
    const at = call + rng.next() * 10;
    return { call, at, ret: at + rng.next() * 10, key: KEYS[rng.int(KEYS.length)] };
  });
  let version = 0;
  const values = new Map(KEYS.map((k) => [k, `${k}-init` as ConfigValue]));
  /** Per key: [version after write, value] in order, for planting stale reads. */
  const writes = new Map(KEYS.map((k) => [k, [] as { op: Op; before: KeyOutput }[]]));
  const perKey = new Map(KEYS.map((k) => [k, [] as Op[]]));
  let serial = 0;
  for (const p of [...planned].sort((a, b) => a.at - b.at)) {
    const indefinite = rng.next() < indefiniteRate;
    const applied = !indefinite || rng.next() < 0.5;
    const before = { version, value: values.get(p.key)! };
    const r = rng.next();
    let input: KeyInput;
    let output: KeyOutput;
    if (r < 0.5) {
      input = { type: "read" };
      output = { ...before };
    } else if (r < 0.8) {
      input = { type: "write", value: serial++ };
      if (applied) values.set(p.key, input.value);
      output = { version: applied ? ++version : version + 1 };
    } else {
      const expectVersion = version - (rng.next() < 0.6 ? 0 : 1);
      input = { type: "cas", expectVersion, value: serial++ };
      const matches = expectVersion === version;
      if (matches && applied) values.set(p.key, input.value);
      output = matches ? { ok: true, version: applied ? ++version : version + 1 } : { ok: false };
    }
    const op: Op = {
      client: 0,
      call: p.call,
      ret: indefinite ? Infinity : p.ret,
      input,
      output: indefinite ? UNKNOWN : output,
    };
    perKey.get(p.key)!.push(op);
    if (input.type !== "read" && !indefinite && !("ok" in output && !output.ok)) {
      writes.get(p.key)!.push({ op, before });
    }
  }
  return { perKey, staleCandidates: staleReads(perKey, writes) };
}

/** Reads that began after a write of their key returned: seeing its predecessor is stale. */
function staleReads(
  perKey: Map<string, Op[]>,
  writes: Map<string, { op: Op; before: KeyOutput }[]>,
): StaleCandidate[] {
  const out: StaleCandidate[] = [];
  for (const [key, history] of perKey) {
    history.forEach((op, index) => {
      if (op.input.type !== "read" || op.ret === Infinity) return;
      const earlier = writes.get(key)!.find((w) => w.op.ret < op.call);
      if (earlier) out.push({ key, index, staleOutput: earlier.before });
    });
  }
  return out;
}

function mutate(rng: Rng, op: Op): Op {
  if (op.ret === Infinity) return op;
  const out = op.output as { version?: number; value?: ConfigValue };
  if (out.version === undefined) return op;
  const version = Math.max(0, out.version + rng.int(5) - 2);
  return { ...op, output: { ...out, version } as KeyOutput };
}

/** Seeded PRNG (mulberry32) so failing seeds can be replayed. */
class Rng {
  #a: number;
  constructor(seed: number) {
    this.#a = seed >>> 0;
  }
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}
