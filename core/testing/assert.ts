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

export function assertThrows(
  fn: () => unknown,
  match?: RegExp | (new (...a: never[]) => Error),
): Error {
  try {
    fn();
  } catch (err) {
    checkMatch(err, match);
    return err as Error;
  }
  throw new Error("expected function to throw");
}

export async function assertRejects(
  fn: () => Promise<unknown>,
  match?: RegExp | (new (...a: never[]) => Error),
): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    checkMatch(err, match);
    return err as Error;
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
