/**
 * Test support for in-process API tests: the real app (createApp) over a real
 * one-voter leader (TestCluster), tokens of every role, and a `call` helper.
 * The host side is not under test there: any use of it fails loudly.
 *
 * @module
 */
import { TestCluster } from "../core/testing/test_cluster.ts";
import { LeaseTable } from "../core/cluster/mod.ts";
import { BlobStore } from "../host/storage/mod.ts";
import type { Migrator, VmHost } from "../host/mod.ts";
import { type AppDeps, createApp } from "./app.ts";
import type { BackupRunner } from "../host/backup/mod.ts";
import type { ServerBindings } from "./server.ts";

/** The shape of an error answer. */
export interface ErrorBody {
  error: { code: string; message: string; details?: { fields?: { field: string }[] } };
}

/** A stand-in whose every use throws, naming `what` and the property used. */
export function notUsedHere<T>(what: string): T {
  return new Proxy({}, {
    get: (_t, prop) => {
      throw new Error(`${what}.${String(prop)} used by a route under test`);
    },
  }) as T;
}

/** Options of {@link TestApp.call}. */
export interface CallOptions {
  token?: string;
  /** Sent as JSON (with its content type). */
  body?: unknown;
  /** Sent as is (wins over `body`). */
  raw?: BodyInit;
  headers?: Record<string, string>;
  /** What the listener would bind (peer certificate, client address). */
  env?: Partial<ServerBindings>;
}

/** One answer: status, headers, and the body (parsed when it is JSON, else text). */
export interface CallResult {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** The app under test and what drives it; stop it with `c.stop()`. */
export interface TestApp {
  c: TestCluster;
  app: ReturnType<typeof createApp>;
  blobs: BlobStore;
  tokens: { admin: string; operator: string; viewer: string };
  call(method: string, path: string, opts?: CallOptions): Promise<CallResult>;
}

/**
 * Starts a one-voter cluster and the real API app over it, with a token of every role.
 * @param more what the app gets beside the stand-ins (e.g. an operation runner under test)
 * @param opts.level the cluster level to start at (default: this program's)
 */
export async function startTestApp(
  more: (c: TestCluster) => Partial<AppDeps> = () => ({}),
  opts: { level?: number } = {},
): Promise<TestApp> {
  const c = await TestCluster.start({}, opts);
  const blobs = await new BlobStore(`${c.dataDir}/blobs`).init();
  const app = createApp(c.node, {
    blobs,
    leases: new LeaseTable(() => c.node.isLeader() ? c.node.raft.basicStatus().term : null),
    host: notUsedHere<VmHost>("host"),
    migrator: notUsedHere<Migrator>("migrator"),
    backups: notUsedHere<BackupRunner>("backups"),
    ...more(c),
  });
  const tokens = {
    admin: c.adminToken,
    operator: await c.token("operator"),
    viewer: await c.token("viewer"),
  };
  const call = async (method: string, path: string, opts: CallOptions = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: BodyInit | undefined = opts.raw;
    if (body === undefined && opts.body !== undefined) {
      headers["content-type"] ??= "application/json";
      body = JSON.stringify(opts.body);
    }
    const res = await app.request(path, { method, headers, body }, opts.env);
    const json = res.headers.get("content-type")?.startsWith("application/json");
    return {
      status: res.status,
      headers: res.headers,
      body: json ? await res.json() : await res.text(),
    };
  };
  return { c, app, blobs, tokens, call };
}

/** The failing fields a 400 names, each once, sorted. */
export function fieldsOf(r: { body: ErrorBody }): string[] {
  return [...new Set((r.body.error.details?.fields ?? []).map((f) => f.field))].sort();
}
