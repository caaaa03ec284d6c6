/**
 * Sequential model of novactl's versioned configuration as seen by the linearizability
 * test: one register `value` plus a `version` that increments on every successful write.
 *
 * Assumes the test's clients are the only writers during the run; any other write bumps
 * the version and would (correctly) make the history unexplainable.
 */
import type { Model, Operation, Unknown } from "./wgl.ts";

export interface ConfigState {
  version: number;
  value: string;
}

export type { Unknown };

export type ConfigInput =
  | { type: "read" }
  | { type: "write"; value: string }
  | { type: "cas"; expectVersion: number; value: string };

export type ReadOutput = ConfigState | Unknown;
export type WriteOutput = { version: number } | Unknown;
/** `ok: false` is a 409: the version did not match, so nothing changed. */
export type CasOutput = { ok: true; version: number } | { ok: false } | Unknown;
export type ConfigOutput = ReadOutput | WriteOutput | CasOutput;

export type ConfigModel = Model<ConfigState, ConfigInput, ConfigOutput>;

export function isUnknown(output: ConfigOutput): output is Unknown {
  return (output as Partial<Unknown>).unknown === true;
}

function isConflict(output: ConfigOutput): boolean {
  return (output as { ok?: boolean }).ok === false;
}

/** Builds the model from the state the test read before starting its workload. */
export function configRegisterModel(initial: ConfigState): ConfigModel {
  return {
    init: () => ({ ...initial }),
    step,
    hash: (s) => `${s.version}\u0000${s.value}`,
    describe: (s) => `v${s.version}=${JSON.stringify(s.value)}`,
    describeOperation,
    readOnly: (input, output) => input.type === "read" || isConflict(output),
    neverAccepts,
    // Versions only grow, so a CAS whose expected version has gone by can never apply.
    inert: (state, input) => input.type === "cas" && input.expectVersion < state.version,
    indefiniteClasses,
  };
}

/**
 * Timed-out writes (and CASes expecting the same version) whose value no read ever
 * returned are interchangeable: applying one or the other yields the same version and a
 * value nobody can tell apart. Clients are expected to write unique values so that this
 * covers nearly all of them; without it every subset of the timed-out writes still
 * pending would be a separate branch of the search.
 */
function indefiniteClasses(history: readonly Operation<ConfigInput, ConfigOutput>[]) {
  const observed = new Set<string>();
  for (const op of history) {
    if (op.input.type === "read" && !isUnknown(op.output)) {
      observed.add((op.output as ConfigState).value);
    }
  }
  return history.map(({ input, output }) => {
    if (!isUnknown(output) || input.type === "read" || observed.has(input.value)) return undefined;
    return input.type === "write" ? "write" : `cas ${input.expectVersion}`;
  });
}

type StepResult = { ok: boolean; state: ConfigState };

function step(state: ConfigState, input: ConfigInput, output: ConfigOutput): StepResult {
  switch (input.type) {
    case "read":
      return stepRead(state, output as ReadOutput);
    case "write":
      return stepWrite(state, input.value, output as WriteOutput);
    case "cas":
      return stepCas(state, input.expectVersion, input.value, output as CasOutput);
  }
}

function stepRead(state: ConfigState, output: ReadOutput): StepResult {
  if (isUnknown(output)) return { ok: true, state };
  return { ok: output.version === state.version && output.value === state.value, state };
}

function stepWrite(state: ConfigState, value: string, output: WriteOutput): StepResult {
  const next = { version: state.version + 1, value };
  // An unknown write is applied here; "never happened" is covered by the checker
  // linearizing it after everything else, where nobody can observe it.
  if (isUnknown(output)) return { ok: true, state: next };
  return { ok: output.version === next.version, state: next };
}

function stepCas(
  state: ConfigState,
  expectVersion: number,
  value: string,
  output: CasOutput,
): StepResult {
  const matches = state.version === expectVersion;
  const next = matches ? { version: state.version + 1, value } : state;
  if (isUnknown(output)) return { ok: true, state: next };
  if (!output.ok) return { ok: !matches, state };
  return { ok: matches && output.version === next.version, state: next };
}

/**
 * Versions never decrease, so a completed op that needs an earlier version (or the
 * current version with another value) can no longer be placed.
 */
function neverAccepts(state: ConfigState, input: ConfigInput, output: ConfigOutput): boolean {
  if (isUnknown(output) || isConflict(output)) return false;
  if (input.type === "read") {
    const seen = output as ConfigState;
    return state.version > seen.version ||
      (state.version === seen.version && state.value !== seen.value);
  }
  // A successful write or CAS needs the version just below the one it reported.
  return state.version >= (output as { version: number }).version;
}

function describeOperation(input: ConfigInput, output: ConfigOutput): string {
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

function describeOutput(input: ConfigInput, output: Exclude<ConfigOutput, Unknown>): string {
  if (input.type === "read") {
    const o = output as ConfigState;
    return `v${o.version}=${JSON.stringify(o.value)}`;
  }
  if ("ok" in output && !output.ok) return "conflict";
  return `v${(output as { version: number }).version}`;
}
