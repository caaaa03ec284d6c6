/** Small HTTP helpers for tests that talk to real novactl processes. */
import { clusterCaFile, clusterFetch } from "../../bench/lib/tls.ts";
import { ResponseChecker } from "../../api/openapi/response_check.ts";

export interface ApiResult<T = Record<string, unknown>> {
  status: number;
  body: T;
}

export async function api<T = Record<string, unknown>>(
  url: string,
  opts: {
    method?: string;
    token?: string;
    body?: unknown;
    raw?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<ApiResult<T>> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined || opts.raw !== undefined) {
    headers["content-type"] = "application/json";
  }
  const res = await clusterFetch(url, {
    method: opts.method ?? "GET",
    headers,
    body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  const body = (text ? JSON.parse(text) : null) as T;
  if (CHECK_OPENAPI && res.headers.get("content-type")?.startsWith("application/json")) {
    await checkAnswer(url, opts.method ?? "GET", res.status, body, opts.token);
  }
  return { status: res.status, body };
}

/**
 * NOVACTL_CHECK_OPENAPI=1: every JSON answer `api()` gets from a node must fit the node's own
 * OpenAPI document (api/openapi/response_check.ts), fetched once per server.
 */
const CHECK_OPENAPI = Deno.env.get("NOVACTL_CHECK_OPENAPI") === "1";
const checkers = new Map<string, Promise<ResponseChecker>>();

/** The node at `url` now runs another program (an upgrade): fetch its document again. */
export function forgetOpenApiDocument(url: string): void {
  checkers.delete(new URL(url).origin);
}

async function checkAnswer(
  url: string,
  method: string,
  status: number,
  body: unknown,
  token?: string,
): Promise<void> {
  const u = new URL(url);
  if (!u.pathname.startsWith("/api/v1/")) return;
  let checker = checkers.get(u.origin);
  if (!checker) {
    checker = clusterFetch(`${u.origin}/api/v1/openapi.json`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    }).then(async (r) => new ResponseChecker(await r.json()));
    checkers.set(u.origin, checker);
  }
  (await checker).check(method, u.pathname, status, body);
}

/** Longest a single CLI call in a test may run (a migration or an image import included). */
const CLI_TIMEOUT_MS = 5 * 60_000;

/** Runs the CLI to completion (killed after CLI_TIMEOUT_MS); returns exit code and output. */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    // Nodes serve HTTPS with their cluster's CA (registered by NovactlCluster).
    env: { NO_COLOR: "1", ...(clusterCaFile() ? { NOVACTL_CA: clusterCaFile()! } : {}), ...env },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    // A CLI call that hangs is killed, and its failure shows up as a non-zero exit code.
    signal: AbortSignal.timeout(CLI_TIMEOUT_MS),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** Like t.step, but a failed step stops the test (so later steps don't run on a broken cluster). */
export async function step(
  t: Deno.TestContext,
  name: string,
  fn: () => Promise<void>,
): Promise<void> {
  if (!(await t.step(name, fn))) throw new Error(`step failed: ${name}`);
}
