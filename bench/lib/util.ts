/** Small shared helpers: ports, polling, and JSON-over-HTTP with timeouts. */
import { clusterFetch } from "./tls.ts";

export const LOOPBACK = "127.0.0.1";

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Picks `count` distinct free TCP ports on loopback. All listeners are held
 * open until every port is chosen so the same port cannot be returned twice.
 *
 * Racy by nature: the ports are free when chosen, not when the caller binds them. Use it only
 * for a process that must be told its peers' ports up front (etcd's static cluster); novactl
 * nodes and QEMU bind port 0 and report the port they got.
 */
export function freePorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: LOOPBACK, port: 0 }),
  );
  const ports = listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  for (const listener of listeners) listener.close();
  return ports;
}

export interface WaitOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** Included in the timeout error so failures say what was awaited. */
  description: string;
}

/** Thrown by a `waitFor` probe to give up at once instead of retrying. */
export class WaitAborted extends Error {}

/**
 * Polls `probe` until it returns a non-undefined value. Exceptions thrown by the
 * probe count as "not yet" (the last one is reported on timeout), except
 * `WaitAborted`, which is rethrown immediately.
 */
export async function waitFor<T>(
  probe: () => Promise<T | undefined>,
  options: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
      lastError = undefined; // the probe answered "not yet": older errors are stale
    } catch (error) {
      if (error instanceof WaitAborted) throw error;
      lastError = error;
    }
    await sleep(options.intervalMs ?? 200);
  }
  const cause = lastError instanceof Error ? `: ${lastError.message}` : "";
  throw new Error(
    `timed out after ${options.timeoutMs} ms waiting for ${options.description}${cause}`,
  );
}

export interface JsonRequest {
  method?: string;
  body?: unknown;
  token?: string;
  timeoutMs?: number;
}

/** Performs a JSON request and returns the status with the parsed body (or null). */
export async function requestJson<T>(
  url: string,
  request: JsonRequest = {},
): Promise<{ status: number; body: T | null }> {
  const headers: Record<string, string> = {};
  if (request.body !== undefined) headers["content-type"] = "application/json";
  if (request.token) headers["authorization"] = `Bearer ${request.token}`;
  const response = await clusterFetch(url, {
    method: request.method ?? (request.body === undefined ? "GET" : "POST"),
    headers,
    body: request.body === undefined ? undefined : JSON.stringify(request.body),
    signal: AbortSignal.timeout(request.timeoutMs ?? 2_000),
  });
  const text = await response.text();
  return { status: response.status, body: text ? parseJsonOrNull<T>(text) : null };
}

function parseJsonOrNull<T>(text: string): T | null {
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

/** Reads the last `maxLines` lines of a log file, or a note if it is unreadable. */
export async function tailFile(path: string, maxLines = 30): Promise<string> {
  try {
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n");
    return lines.slice(-maxLines).join("\n");
  } catch (error) {
    return `(cannot read ${path}: ${error instanceof Error ? error.message : error})`;
  }
}
