/**
 * Sequential model of ONE key of novactl's versioned configuration, for checking each
 * key's history on its own (linearizability is compositional: a history is
 * linearizable iff every object's sub-history is).
 *
 * novactl has one version counter for the whole configuration: a write to any key
 * bumps it, and If-Match compares against it. Seen from one key, other keys' writes
 * make the version jump by unknown amounts at unknown moments. So the state keeps the
 * key's value and a lower bound of the global version (the version of the last write
 * of this key that the linearization placed), and:
 * - a read must return the key's current value, with a version at least the bound;
 * - a write or successful CAS must report a version above the bound (a CAS exactly
 *   its expected version + 1, with the expected version at least the bound);
 * - a CAS conflict (409) is always possible: another key may have moved the version.
 *
 * Every per-key projection of a linearizable whole-configuration history satisfies
 * this model (the global version only grows), so a violation here is a real one. It
 * still catches what matters: a stale read returns a value or version that a write of
 * this key, finished before the read began, had already replaced.
 *
 * Assumes the test's clients are the only writers and write unique values per key.
 */
import type { Model, Operation, Unknown } from "./wgl.ts";

export type ConfigValue = string | number;

export interface KeyState {
  /** Lower bound of the configuration version (exact right after this key's writes). */
  version: number;
  value: ConfigValue;
}

export type KeyInput =
  | { type: "read" }
  | { type: "write"; value: ConfigValue }
  | { type: "cas"; expectVersion: number; value: ConfigValue };

export type KeyReadOutput = { version: number; value: ConfigValue } | Unknown;
export type KeyWriteOutput = { version: number } | Unknown;
/** `ok: false` is a 409: the configuration version did not match, so nothing changed. */
export type KeyCasOutput = { ok: true; version: number } | { ok: false } | Unknown;
export type KeyOutput = KeyReadOutput | KeyWriteOutput | KeyCasOutput;

export type KeyModel = Model<KeyState, KeyInput, KeyOutput>;

function isUnknown(output: KeyOutput): output is Unknown {
  return (output as Partial<Unknown>).unknown === true;
}

function isConflict(output: KeyOutput): boolean {
  return (output as { ok?: boolean }).ok === false;
}

/** Builds the model from the key's value and the version read before the workload. */
export function configKeyModel(initial: KeyState): KeyModel {
  return {
    init: () => ({ ...initial }),
    step,
    hash: (s) => `${s.version}\u0000${JSON.stringify(s.value)}`,
    describe: (s) => `v>=${s.version} ${JSON.stringify(s.value)}`,
    describeOperation,
    // Reads only check the bound; raising it would cost the checker its cheapest case.
    readOnly: (input, output) => input.type === "read" || isConflict(output),
    neverAccepts,
    // The bound only grows, so a CAS expecting a version below it can never apply.
    inert: (state, input) => input.type === "cas" && input.expectVersion < state.version,
    indefiniteClasses,
  };
}

type StepResult = { ok: boolean; state: KeyState };

function step(state: KeyState, input: KeyInput, output: KeyOutput): StepResult {
  switch (input.type) {
    case "read":
      return stepRead(state, output as KeyReadOutput);
    case "write":
      return stepWrite(state, input.value, output as KeyWriteOutput);
    case "cas":
      return stepCas(state, input.expectVersion, input.value, output as KeyCasOutput);
  }
}

function stepRead(state: KeyState, output: KeyReadOutput): StepResult {
  if (isUnknown(output)) return { ok: true, state };
  return { ok: output.value === state.value && output.version >= state.version, state };
}

function stepWrite(state: KeyState, value: ConfigValue, output: KeyWriteOutput): StepResult {
  // An unknown write happened at some version above the bound; +1 is the safe lower bound.
  // "Never happened" is covered by the checker placing it after everything else.
  if (isUnknown(output)) return { ok: true, state: { version: state.version + 1, value } };
  return { ok: output.version > state.version, state: { version: output.version, value } };
}

function stepCas(
  state: KeyState,
  expectVersion: number,
  value: ConfigValue,
  output: KeyCasOutput,
): StepResult {
  const possible = expectVersion >= state.version;
  const applied = { version: expectVersion + 1, value };
  if (isUnknown(output)) return { ok: true, state: possible ? applied : state };
  if (!output.ok) return { ok: true, state };
  return { ok: possible && output.version === expectVersion + 1, state: applied };
}

/** The bound never decreases, and at a given bound the value only changes with it. */
function neverAccepts(state: KeyState, input: KeyInput, output: KeyOutput): boolean {
  if (isUnknown(output) || isConflict(output)) return false;
  if (input.type === "read") {
    const seen = output as { version: number; value: ConfigValue };
    return state.version > seen.version ||
      (state.version === seen.version && state.value !== seen.value);
  }
  return state.version >= (output as { version: number }).version;
}

/**
 * Timed-out writes (and CASes expecting the same version) whose value no read returned
 * are interchangeable: either one leaves the same bound and a value nobody can tell
 * apart. See config_register.ts for why this matters to the search.
 */
function indefiniteClasses(history: readonly Operation<KeyInput, KeyOutput>[]) {
  const observed = new Set<ConfigValue>();
  for (const op of history) {
    if (op.input.type === "read" && !isUnknown(op.output)) {
      observed.add((op.output as { value: ConfigValue }).value);
    }
  }
  return history.map(({ input, output }) => {
    if (!isUnknown(output) || input.type === "read" || observed.has(input.value)) return undefined;
    return input.type === "write" ? "write" : `cas ${input.expectVersion}`;
  });
}

function describeOperation(input: KeyInput, output: KeyOutput): string {
  const result = isUnknown(output) ? "?" : describeOutput(input, output);
  switch (input.type) {
    case "read":
      return `read -> ${result}`;
    case "write":
      return `write(${JSON.stringify(input.value)}) -> ${result}`;
    case "cas":
      return `cas(v${input.expectVersion}, ${JSON.stringify(input.value)}) -> ${result}`;
  }
}

function describeOutput(input: KeyInput, output: Exclude<KeyOutput, Unknown>): string {
  if (input.type === "read") {
    const o = output as { version: number; value: ConfigValue };
    return `v${o.version}=${JSON.stringify(o.value)}`;
  }
  if ("ok" in output && !output.ok) return "conflict";
  return `v${(output as { version: number }).version}`;
}
