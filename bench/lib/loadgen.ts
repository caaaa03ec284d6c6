/**
 * Closed-loop HTTP write load generator, shared verbatim by every system under test.
 *
 * `clients` async workers each loop "send one write → await its response" on a
 * keep-alive connection pool. A warm-up period runs first and is not counted;
 * afterwards every write that *completes* inside the measurement window is
 * counted and its latency recorded.
 */

import { clusterCaPems } from "./tls.ts";
import { type LatencySummary, summarize } from "./stats.ts";

/**
 * One HTTP request, built once per client and re-sent in a loop. A function body is called
 * with the client's request number (0, 1, …), for requests that must differ, e.g. new names.
 */
export interface WriteRequest {
  url: string;
  method: "PUT" | "POST" | "GET" | "DELETE";
  headers: Record<string, string>;
  body?: string | ((seq: number) => string);
  /**
   * Request number `seq` of this client, when requests differ by more than their
   * body (a create, then the delete of what it created): overrides url, method, body.
   */
  sequence?: (seq: number) => { url: string; method: WriteRequest["method"]; body?: string };
}

export interface LoadOptions {
  clients: number;
  durationMs: number;
  warmupMs: number;
  /** Builds the request that client number `client` (0-based) sends repeatedly. */
  requestFor: (client: number) => WriteRequest;
  /**
   * At most this many requests in all (warmup included), for requests that use up
   * something finite (VM creates fill the hosts). Spent before the window ends, the
   * window ends with the last answer and throughput is taken over what it lasted.
   */
  maxRequests?: number;
}

export interface LoadResult {
  clients: number;
  /** The measurement window: `durationMs`, or less when `maxRequests` ran out first. */
  durationMs: number;
  writes: number;
  writesPerSec: number;
  errors: number;
  /** Up to a few distinct error messages, for diagnosis. */
  errorSamples: string[];
  latency: LatencySummary;
}

const MAX_ERROR_SAMPLES = 5;
const ERROR_BACKOFF_MS = 10;
/** Grace period after the window closes before in-flight requests are aborted. */
const DRAIN_GRACE_MS = 10_000;

interface Window {
  start: number;
  end: number;
}

class Recorder {
  readonly latencies: number[] = [];
  errors = 0;
  readonly errorSamples = new Set<string>();
  /** Requests sent so far, warmup included. */
  sent = 0;
  /** When the last answer inside the window came. */
  lastAnswerAt = 0;

  constructor(readonly window: Window, readonly maxRequests = Infinity) {}

  /** Takes one request from the budget; false once it is spent. */
  take(): boolean {
    if (this.sent >= this.maxRequests) return false;
    this.sent++;
    return true;
  }

  get budgetSpent(): boolean {
    return this.sent >= this.maxRequests;
  }

  success(startedAt: number, finishedAt: number): void {
    if (!this.#inWindow(finishedAt)) return;
    this.latencies.push(finishedAt - startedAt);
    this.lastAnswerAt = finishedAt;
  }

  failure(finishedAt: number, error: unknown): void {
    if (!this.#inWindow(finishedAt)) return;
    this.errors++;
    this.lastAnswerAt = finishedAt;
    if (this.errorSamples.size < MAX_ERROR_SAMPLES) this.errorSamples.add(errorMessage(error));
  }

  #inWindow(time: number): boolean {
    return time >= this.window.start && time <= this.window.end;
  }
}

/** Runs the closed loop and returns throughput and latency for the measurement window. */
export async function runClosedLoop(options: LoadOptions): Promise<LoadResult> {
  const now = performance.now();
  const window = {
    start: now + options.warmupMs,
    end: now + options.warmupMs + options.durationMs,
  };
  const recorder = new Recorder(window, options.maxRequests);
  // Trusts the cluster CAs NovactlCluster registered (nodes serve HTTPS by default).
  const httpClient = Deno.createHttpClient({
    poolMaxIdlePerHost: options.clients,
    caCerts: clusterCaPems(),
  });
  const abort = AbortSignal.timeout(options.warmupMs + options.durationMs + DRAIN_GRACE_MS);
  try {
    const workers = Array.from(
      { length: options.clients },
      (_, client) => runClient(options.requestFor(client), { httpClient, abort, recorder }),
    );
    await Promise.all(workers);
  } finally {
    httpClient.close();
  }
  return toResult(options, recorder);
}

interface ClientContext {
  httpClient: Deno.HttpClient;
  abort: AbortSignal;
  recorder: Recorder;
}

async function runClient(request: WriteRequest, context: ClientContext): Promise<void> {
  const { recorder } = context;
  for (let seq = 0; performance.now() < recorder.window.end && recorder.take(); seq++) {
    const step = request.sequence?.(seq) ?? {
      url: request.url,
      method: request.method,
      body: typeof request.body === "function" ? request.body(seq) : request.body,
    };
    const startedAt = performance.now();
    try {
      await sendWrite({ ...request, ...step }, step.body, context);
      recorder.success(startedAt, performance.now());
    } catch (error) {
      recorder.failure(performance.now(), error);
      if (context.abort.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, ERROR_BACKOFF_MS));
    }
  }
}

/** Sends one write; resolves on 2xx (body fully drained to keep the connection reusable). */
async function sendWrite(
  request: WriteRequest,
  body: string | undefined,
  context: ClientContext,
): Promise<void> {
  const response = await fetch(request.url, {
    method: request.method,
    headers: request.headers,
    body,
    client: context.httpClient,
    signal: context.abort,
  });
  const text = await response.text();
  if (response.status < 200 || response.status > 299) {
    throw new Error(`HTTP ${response.status}: ${text.slice(0, 200)}`);
  }
}

function toResult(options: LoadOptions, recorder: Recorder): LoadResult {
  const latency = summarize(recorder.latencies);
  const durationMs = recorder.budgetSpent && recorder.lastAnswerAt > 0
    ? Math.min(options.durationMs, recorder.lastAnswerAt - recorder.window.start)
    : options.durationMs;
  return {
    clients: options.clients,
    durationMs,
    writes: latency.count,
    writesPerSec: durationMs > 0 ? latency.count / (durationMs / 1000) : 0,
    errors: recorder.errors,
    errorSamples: [...recorder.errorSamples],
    latency,
  };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** A printable ASCII payload of exactly `bytes` bytes (deterministic). */
export function payload(bytes: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  return Array.from({ length: bytes }, (_, i) => alphabet[i % alphabet.length]).join("");
}
