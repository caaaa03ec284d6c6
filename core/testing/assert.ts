/** Minimal assertions for tests (jsr:@std/assert is not reachable from our machines). */
import { deepStrictEqual, ok, strictEqual } from "node:assert";

export function assert(cond: unknown, msg?: string): asserts cond {
  ok(cond, msg);
}

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

export function assertStrictEquals<T>(actual: T, expected: T, msg?: string): void {
  strictEqual(actual, expected, msg);
}

/** Returns what `fn` threw, typed as the class `match` names. */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  match?: RegExp | (new (...a: never[]) => E),
): E {
  try {
    fn();
  } catch (err) {
    checkMatch(err, match);
    return err as E;
  }
  throw new Error("expected function to throw");
}

/** Returns what `fn` rejected with, typed as the class `match` names. */
export async function assertRejects<E extends Error = Error>(
  fn: () => Promise<unknown>,
  match?: RegExp | (new (...a: never[]) => E),
): Promise<E> {
  try {
    await fn();
  } catch (err) {
    checkMatch(err, match);
    return err as E;
  }
  throw new Error("expected promise to reject");
}

function checkMatch(err: unknown, match?: RegExp | (new (...a: never[]) => Error)): void {
  if (!match) return;
  if (match instanceof RegExp) {
    const text = err instanceof Error ? err.message : String(err);
    if (!match.test(text)) throw new Error(`error "${text}" does not match ${match}`);
  } else if (!(err instanceof match)) {
    throw new Error(`expected ${match.name}, got ${(err as Error)?.constructor?.name}: ${err}`);
  }
}
