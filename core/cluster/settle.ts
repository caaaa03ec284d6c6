/**
 * Waiting on the replica: a condition checked again on every applied change that may affect
 * it, never by polling. The VM waits (./vm_wait.ts) and the operation waits
 * (./operation_service.ts) are this one wait with their own checks.
 */

/** How long a wait may hold, and what may end it early. */
export interface SettleOptions {
  /** At the deadline the wait answers with the check as it is then; Infinity: no deadline. */
  timeoutMs: number;
  signal?: AbortSignal;
}

/**
 * `check()` once `settled` holds for it, checked again on each change `subscribe` reports;
 * at the deadline or on abort, `check()` as it is then.
 */
export function settleOnChange<T>(
  subscribe: (listener: () => void) => () => void,
  check: () => T,
  settled: (r: T) => boolean,
  opts: SettleOptions,
): Promise<T> {
  const now = check();
  if (settled(now) || opts.signal?.aborted) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const done = (r: () => T) => {
      off();
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      try {
        resolve(r());
      } catch (err) {
        reject(err);
      }
    };
    const off = subscribe(() => {
      const r = check();
      if (settled(r)) done(() => r);
    });
    // setTimeout fires at once for delays it cannot hold (Infinity, or above 2^31 - 1 ms).
    const timer = Number.isFinite(opts.timeoutMs) && opts.timeoutMs < 2 ** 31
      ? setTimeout(() => done(check), opts.timeoutMs)
      : undefined;
    const onAbort = () => done(check);
    opts.signal?.addEventListener("abort", onAbort);
  });
}
