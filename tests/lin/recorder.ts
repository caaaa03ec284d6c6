/**
 * Records client operations against a real cluster into a history for `checkLinearizable`.
 *
 * The call timestamp is taken before the request starts and the return timestamp after
 * the response is fully read, so the recorded interval always contains the moment the
 * system actually applied the operation.
 */
import type { Operation, Unknown } from "./wgl.ts";

/**
 * How a thrown error relates to the operation's effect:
 * - "definite": known not to have taken effect (400, 401, ...); the op is left out.
 * - "indefinite": may or may not have taken effect (timeout, reset, 503 after forwarding);
 *   recorded with `ret = Infinity` and an `{ unknown: true }` output.
 */
export type ErrorKind = "definite" | "indefinite";

export type RecordResult<O> =
  | { status: "ok"; output: O }
  | { status: "failed"; error: unknown }
  | { status: "unknown"; error: unknown };

/** Calling everything indefinite is always sound: it only gives the checker more freedom. */
const assumeIndefinite = (): ErrorKind => "indefinite";

export class HistoryRecorder<I, O> {
  private readonly ops: Operation<I, O | Unknown>[] = [];

  constructor(private readonly clock: () => number = () => performance.now()) {}

  /**
   * Runs `fn` as one operation of `client`. Results that are themselves definite failures
   * with information (e.g. a 409 for a CAS) should be returned by `fn` as outputs, not
   * thrown. Never throws: the outcome is reported in the result.
   */
  async record(
    client: number,
    input: I,
    fn: () => Promise<O>,
    classify: (error: unknown) => ErrorKind = assumeIndefinite,
  ): Promise<RecordResult<O>> {
    const call = this.clock();
    try {
      const output = await fn();
      this.ops.push({ client, input, output, call, ret: this.clock() });
      return { status: "ok", output };
    } catch (error) {
      if (classify(error) === "definite") return { status: "failed", error };
      this.ops.push({ client, input, output: { unknown: true }, call, ret: Infinity });
      return { status: "unknown", error };
    }
  }

  /** A copy of the operations recorded so far, in completion order. */
  history(): Operation<I, O | Unknown>[] {
    return [...this.ops];
  }
}
