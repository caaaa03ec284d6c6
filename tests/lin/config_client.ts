/**
 * Reads, writes and compare-and-set of one configuration key over novactl's REST API
 * (`/api/v1/config/:key`, If-Match for CAS), with every failure sorted into "definitely
 * did not happen" (`DefiniteFailure`) or "may have happened" (any other error), as the
 * history recorder needs.
 */
import { clusterFetch } from "../../bench/lib/tls.ts";
import type { ConfigValue, KeyOutput } from "./config_key.ts";

/** The operation is known not to have taken effect: the recorder leaves it out. */
export class DefiniteFailure extends Error {}

/**
 * The node the client asked could not forward the request to the leader (it crossed a
 * cut link). Whether a forwarded write reached the leader is unknown.
 */
export class LeaderUnreachable extends Error {}

export interface Target {
  url: string;
  token: string;
}

/**
 * Shorter than the nemesis's faults, so that clients stuck on a paused or cut-off node
 * give up and go on working through the others while the fault lasts.
 */
const REQUEST_TIMEOUT_MS = 1_500;

async function request(
  target: Target,
  key: string,
  method: string,
  body?: unknown,
  ifMatch?: number,
): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${target.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (ifMatch !== undefined) headers["if-match"] = String(ifMatch);
  try {
    return await clusterFetch(`${target.url}/api/v1/config/${key}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    // Nothing was sent when the connection was refused: the operation cannot have happened.
    if (/refused/i.test(String(err))) throw new DefiniteFailure(String(err));
    throw err;
  }
}

export async function readKey(target: Target, key: string): Promise<KeyOutput> {
  const res = await request(target, key, "GET");
  const body = await res.json();
  if (res.status === 200) return { version: body.version, value: body.value };
  throwIfLeaderUnreachable(res.status, body);
  throw new DefiniteFailure(`read ${res.status}`); // reads change nothing
}

export async function writeKey(
  target: Target,
  key: string,
  value: ConfigValue,
  ifMatch?: number,
): Promise<KeyOutput> {
  const res = await request(target, key, "PUT", { value }, ifMatch);
  const body = await res.json();
  if (res.status === 200) {
    return ifMatch === undefined ? { version: body.version } : { ok: true, version: body.version };
  }
  if (res.status === 409 && ifMatch !== undefined) return { ok: false };
  if (res.status === 400 || res.status === 401) throw new DefiniteFailure(`write ${res.status}`);
  throwIfLeaderUnreachable(res.status, body);
  throw new Error(`write ${res.status}: ${body?.error?.message}`); // 503/504: outcome unknown
}

/** The forward itself failed; for a write, whether the leader got it is unknown. */
function throwIfLeaderUnreachable(status: number, body: { error?: { message?: string } }): void {
  const message = String(body?.error?.message);
  if (status === 503 && /unreachable/.test(message)) throw new LeaderUnreachable(message);
}
