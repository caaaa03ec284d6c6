/**
 * Unit tests for the WGL checker and the versioned-config model, on hand-built and
 * generated histories (no cluster needed).
 */
import { assert, assertEquals, assertThrows } from "../../core/testing/assert.ts";
import {
  type ConfigInput,
  type ConfigOutput,
  configRegisterModel,
  type ConfigState,
} from "./config_register.ts";
import { checkLinearizable, type Operation } from "./wgl.ts";

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

for (const rate of [0, 0.01, 0.03, 0.05, 0.1]) for (const clients of [10, 20]) {
  const { history } = generateHistory(new Rng(42), { clients, ops: 3000, indefiniteRate: rate });
  const t = performance.now();
  const r = checkLinearizable(model, history, {timeoutMs: 20000});
  console.log("rate", rate, "clients", clients, r.ok, r.timedOut, Math.round(performance.now() - t), "ms");
}
