/**
 * A state machine on a temp file for unit tests of its resources: commands applied one
 * entry at a time, as Raft would hand them over.
 */
import { join } from "node:path";
import { StateMachine } from "../fsm/state_machine.ts";
import type { Command } from "../fsm/commands.ts";
import type { Entry } from "../raft/types.ts";
import type { NovaError } from "../errors/mod.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";

/** The index of the last entry applied to each state machine. */
const lastIndex = new WeakMap<StateMachine, number>();

/** Applies `c` as the next entry and returns its value (throws what a refused entry gave). */
export function apply(fsm: StateMachine, c: Command): unknown {
  const index = (lastIndex.get(fsm) ?? 0) + 1;
  lastIndex.set(fsm, index);
  const e: Entry = { index, term: 1, type: "normal", data: JSON.stringify(c) };
  const r = fsm.applyEntries([e]).get(e.index)!;
  if (!r.ok) throw r.error;
  return r.value;
}

/** The error the state machine refused `c` with; throws when it took it. */
export function refused(fsm: StateMachine, c: Command): NovaError {
  try {
    apply(fsm, c);
  } catch (err) {
    return err as NovaError;
  }
  throw new Error(`${c.op} was not refused`);
}

/** A new state machine holding an initialised one-member cluster (h1) with the default config. */
export async function fresh(): Promise<StateMachine> {
  const fsm = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  apply(fsm, {
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "h1", url: "http://a" },
    adminTokenHash: "h",
    config: DEFAULT_CONFIG,
    at: 1,
  });
  return fsm;
}
