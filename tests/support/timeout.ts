/**
 * Bounds for multi-process tests: a hung process or a wait with no end fails the test with a
 * message that says what hung, instead of stalling CI until its global limit.
 *
 * ```ts
 * testWithTimeout({ name: "…", timeoutMs: 10 * MINUTE, sanitizeOps: false }, async (t) => {
 *   const { value } = await readWithTimeout(reader, 30_000, "the console stream");
 * });
 * ```
 *
 * NOVACTL_TEST_TIMEOUT_SCALE (default 1) multiplies every bound, for slow machines.
 */

import { stopEverythingRunning } from "../../bench/lib/cleanup.ts";

export const MINUTE = 60_000;

/** Every test timeout is multiplied by this (env NOVACTL_TEST_TIMEOUT_SCALE). */
export function timeoutScale(): number {
  const scale = Number(Deno.env.get("NOVACTL_TEST_TIMEOUT_SCALE") ?? "1");
  return scale > 0 ? scale : 1;
}

export class TestTimeoutError extends Error {
  override name = "TestTimeoutError";
}

export type TimedTestDefinition = Omit<Deno.TestDefinition, "fn"> & { timeoutMs: number };

/**
 * `Deno.test` whose body fails with `TestTimeoutError` once `timeoutMs` (times the scale) has
 * passed, after stopping every cluster and process the body left running (bench/lib/cleanup.ts).
 * The body also gets an AbortSignal that aborts at that moment, to stop its own work.
 */
export function testWithTimeout(
  definition: TimedTestDefinition,
  fn: (t: Deno.TestContext, signal: AbortSignal) => void | Promise<void>,
): void {
  const { timeoutMs, ...rest } = definition;
  Deno.test({
    ...rest,
    fn: (t) =>
      runWithTimeout(`test "${rest.name}"`, timeoutMs, (signal) => fn(t, signal), {
        // The body's own cleanup will not run: stop the clusters and processes it started.
        onTimeout: stopEverythingRunning,
      }),
  });
}

/**
 * Runs `body` and rejects with `TestTimeoutError` if it has not settled after `timeoutMs`
 * (times the scale); the signal given to `body` aborts at the same moment, and `onTimeout`
 * runs before the rejection.
 */
export async function runWithTimeout<T>(
  what: string,
  timeoutMs: number,
  body: (signal: AbortSignal) => T | Promise<T>,
  options: { onTimeout?: () => Promise<void> } = {},
): Promise<T> {
  const limitMs = Math.round(timeoutMs * timeoutScale());
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new TestTimeoutError(`${what} did not finish within ${limitMs} ms`);
      controller.abort(error);
      const cleanup = options.onTimeout?.() ?? Promise.resolve();
      cleanup.catch(() => {}).finally(() => reject(error));
    }, limitMs);
  });
  const running = Promise.resolve().then(() => body(controller.signal));
  running.catch(() => {}); // if it rejects after the timeout, the timeout was the failure
  try {
    return await Promise.race([running, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** `reader.read()` that rejects with `TestTimeoutError` after `timeoutMs` with nothing read. */
export async function readWithTimeout<T>(
  reader: ReadableStreamDefaultReader<T>,
  timeoutMs: number,
  what: string,
): Promise<ReadableStreamReadResult<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new TestTimeoutError(`nothing read from ${what} within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([reader.read(), expired]);
  } finally {
    clearTimeout(timer);
  }
}
