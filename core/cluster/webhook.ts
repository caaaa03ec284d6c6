/**
 * Alert webhooks: a JSON POST with a timeout per attempt and bounded retries with exponential
 * backoff. A delivery never throws: it answers whether it got through, and counts failed
 * attempts and deliveries in /metrics. Only a 2xx answer counts as delivered; a 4xx other than
 * 408 and 429 is not retried (the receiver refuses this body and would refuse it again).
 *
 * @module
 */
import { log } from "../log/mod.ts";
import { metrics } from "../metrics/mod.ts";

/** What an alert webhook receives. */
export interface AlertNotification {
  rule: string;
  metric: string;
  /** The VM's or host's name, or `cluster`. */
  subject: string;
  state: "firing" | "resolved";
  /** The value that fired it, or the value when it resolved (null: the subject went away). */
  value: number | null;
  comparison: "above" | "below";
  threshold: number;
  forSeconds: number;
  /** When the condition started to hold (ISO 8601). */
  since: string;
  firedAt: string;
  resolvedAt: string | null;
  /** The leader that sent it. */
  node: string;
}

/** Retry policy of one delivery. */
export interface RetryPolicy {
  /** Attempts in all (the first one included). */
  attempts: number;
  /** The wait before the second attempt; doubled before each next one. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Each attempt's timeout. */
  timeoutMs: number;
}

/** 5 attempts over about 15 s (1, 2, 4, 8 s between them), 5 s each at most. */
export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 5,
  baseDelayMs: 1_000,
  maxDelayMs: 30_000,
  timeoutMs: 5_000,
};

/** The outcome of one delivery. */
export interface Delivery {
  ok: boolean;
  attempts: number;
  /** The last failure (status or error), when not ok. */
  error: string | null;
}

/** What {@link deliver} may be given instead of the real fetch and timers (tests). */
export interface DeliverDeps {
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Stops retrying (the node is stopping). */
  signal?: AbortSignal;
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** The wait before attempt `n` (1-based; 0 before the first). */
export function backoffMs(n: number, p: RetryPolicy): number {
  return n <= 1 ? 0 : Math.min(p.maxDelayMs, p.baseDelayMs * 2 ** (n - 2));
}

/**
 * POSTs `body` as JSON to `url` until a 2xx answer, at most `policy.attempts` times.
 * @returns whether it was delivered, after how many attempts, and the last error
 */
export async function deliver(
  url: string,
  body: AlertNotification,
  policy: RetryPolicy = DEFAULT_RETRY,
  deps: DeliverDeps = {},
): Promise<Delivery> {
  const doFetch = deps.fetch ?? ((u: string, i: RequestInit) => fetch(u, i));
  const sleep = deps.sleep ?? abortableSleep;
  const json = JSON.stringify(body);
  let error: string | null = null;
  let n = 0;
  while (n < policy.attempts && !deps.signal?.aborted) {
    n++;
    const wait = backoffMs(n, policy);
    if (wait > 0) await sleep(wait, deps.signal);
    if (deps.signal?.aborted) break;
    let retry = true;
    try {
      const res = await doFetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "novactl-alerts" },
        body: json,
        signal: AbortSignal.timeout(policy.timeoutMs),
      });
      await res.body?.cancel();
      if (res.ok) {
        metrics.alertWebhookDeliveries.inc({ result: "delivered" });
        return { ok: true, attempts: n, error: null };
      }
      error = `HTTP ${res.status}`;
      retry = res.status >= 500 || res.status === 408 || res.status === 429;
    } catch (err) {
      error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
    metrics.alertWebhookAttemptFailures.inc();
    if (!retry) break;
  }
  metrics.alertWebhookDeliveries.inc({ result: "failed" });
  // The URL's query may hold a secret of the receiver's: log its origin and path only.
  const u = new URL(url);
  log.warn("alert webhook not delivered", {
    webhook: u.origin + u.pathname,
    rule: body.rule,
    subject: body.subject,
    state: body.state,
    attempts: n,
    error,
  });
  return { ok: false, attempts: n, error };
}
