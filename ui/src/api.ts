/// <reference lib="dom" />
/**
 * The dashboard's only way to the node: the authenticated REST API, with the token the
 * operator signed in with (kept in sessionStorage, so it ends with the tab).
 */

const TOKEN_KEY = "novactl.token";

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string | null): void {
  if (token === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

/** An answer other than 2xx, with the API's error code and message when it sent them. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

/** Called when the API answers 401 to a request made with the saved token. */
let onUnauthorized: (message: string) => void = () => {};
export function setUnauthorizedHandler(f: (message: string) => void): void {
  onUnauthorized = f;
}

/**
 * One API request. `path` starts after `/api/v1`.
 * @throws ApiError for any non-2xx answer
 */
export async function api<T>(
  path: string,
  init: { method?: string; body?: unknown; token?: string; signal?: AbortSignal } = {},
): Promise<T> {
  const token = init.token ?? savedToken() ?? "";
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`/api/v1${path}`, {
    method: init.method ?? "GET",
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    signal: init.signal,
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch { /* not JSON: the text is the message */ }
  if (!res.ok) {
    const err = (json as { error?: { code?: string; message?: string } } | null)?.error;
    const e = new ApiError(
      res.status,
      err?.code ?? String(res.status),
      err?.message ?? (text || res.statusText),
    );
    if (res.status === 401 && init.token === undefined) onUnauthorized(e.message);
    throw e;
  }
  return json as T;
}

/** A WebSocket or EventSource URL on this node, with the token in the query (they cannot set headers). */
export function streamUrl(path: string, params: Record<string, string> = {}, ws = false): string {
  const q = new URLSearchParams({ ...params, token: savedToken() ?? "" });
  const base = ws ? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}` : "";
  return `${base}/api/v1${path}?${q}`;
}

export interface VmView {
  name: string;
  image: string;
  cpus: number;
  memoryMiB: number;
  node: string | null;
  state: string;
  desired: string;
  reason: string | null;
  ha: boolean;
  labels: Record<string, string>;
  group?: string;
  disks: { name?: string; sizeGiB?: number; [k: string]: unknown }[];
  snapshots: { name: string; createdAt?: string; memory?: boolean; [k: string]: unknown }[];
  nics?: { network?: string; ip?: string; mac?: string; [k: string]: unknown }[];
  guest: { ips?: string[]; [k: string]: unknown } | null;
  migration?: { opId: string; to: string } | null;
  createdAt: string;
  updatedAt: string;
}

export interface NodeView {
  name: string;
  url: string;
  state: string;
  role: string | null;
  labels: Record<string, string>;
  inventory: { cpus: number; memoryMiB: number; diskGiB: number; diskFreeGiB: number } | null;
}

export interface OperationView {
  id: string;
  kind: string;
  target: string;
  runner: string;
  state: string;
  progress: Record<string, unknown>;
  error: string | null;
  by: string;
  createdAt: string;
  updatedAt: string;
}

/** One event of `GET /api/v1/events`. */
export interface ClusterEvent {
  id: string;
  type: string;
  action: string;
  kind: string;
  resource: string;
  target: string | null;
  at: string;
  details: Record<string, unknown>;
}
