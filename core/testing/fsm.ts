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

/**
 * Two replicas fed the same entries, for resources whose apply must be deterministic: each
 * entry's outcome is compared between them, so what one decides, the other must too.
 */
export class Replicas {
  index = 0;
  readonly a: StateMachine;
  readonly b: StateMachine;
  constructor(dir: string) {
    this.a = new StateMachine(join(dir, "a.db"));
    this.b = new StateMachine(join(dir, "b.db"));
  }

  /** Applies `c` on both replicas; returns replica a's outcome (the same as b's). */
  try(c: Command): { ok: true; value: unknown } | { ok: false; error: Error } {
    const e: Entry = { index: ++this.index, term: 1, type: "normal", data: JSON.stringify(c) };
    const ra = this.a.applyEntries([e]).get(e.index)!;
    const rb = this.b.applyEntries([e]).get(e.index)!;
    if (JSON.stringify(ra) !== JSON.stringify(rb)) {
      throw new Error(
        `entry ${e.index} (${c.op}) applied differently: ${JSON.stringify(ra)} vs ${
          JSON.stringify(rb)
        }`,
      );
    }
    return ra;
  }

  /** Applies `c` on both replicas; returns its value (throws what a refused entry gave). */
  apply(c: Command): unknown {
    const r = this.try(c);
    if (!r.ok) throw r.error;
    return r.value;
  }

  /** What `read` finds on replica a, after checking that b holds the same. */
  alike<T>(read: (fsm: StateMachine) => T, what: string): T {
    const [a, b] = [read(this.a), read(this.b)];
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      throw new Error(`${what} differs: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    }
    return a;
  }

  close(): void {
    this.a.close();
    this.b.close();
  }
}
