/** Running the CLI in-process for tests, capturing what it prints. */
import process from "node:process";
import { runCli } from "./main.ts";
import { TestCluster } from "../core/testing/test_cluster.ts";
import { LeaseTable } from "../core/cluster/mod.ts";
import { BlobStore } from "../host/storage/mod.ts";
import type { Migrator, VmHost } from "../host/mod.ts";
import { type AppDeps, createApp } from "../api/app.ts";

/** What one CLI run did. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI, capturing what it writes through console and through commander's own output. */
export async function capture(fn: () => Promise<number>): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const saved = {
    log: console.log,
    error: console.error,
    out: process.stdout.write,
    err: process.stderr.write,
  };
  const line = (sink: string[]) => (...a: unknown[]) => void sink.push(a.join(" ") + "\n");
  const raw = (sink: string[]) => (chunk: string | Uint8Array) => {
    sink.push(typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk));
    return true;
  };
  console.log = line(out);
  console.error = line(err);
  process.stdout.write = raw(out) as typeof process.stdout.write;
  process.stderr.write = raw(err) as typeof process.stderr.write;
  try {
    const code = await fn();
    return { code, stdout: out.join(""), stderr: err.join("") };
  } finally {
    console.log = saved.log;
    console.error = saved.error;
    process.stdout.write = saved.out;
    process.stderr.write = saved.err;
  }
}

/** Runs `novactl ARGS` in-process. */
export function cli(...args: string[]): Promise<Run> {
  return capture(() => runCli(args));
}

/** A request a stand-in server saw. */
export interface SeenRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | null;
}

/**
 * A stand-in API server that answers `GET /api/v1/vms` with `vms` and each path of `lists`
 * with its items under its key (two per page, following `continue`), other lists with one
 * item named after the server, and records every request.
 */
export function standIn(
  label: string,
  vms: Record<string, unknown>[] = [],
  lists: Record<string, { key: string; items: Record<string, unknown>[] }> = {},
) {
  const seen: SeenRequest[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const u = new URL(req.url);
    seen.push({
      method: req.method,
      path: u.pathname,
      query: u.searchParams,
      authorization: req.headers.get("authorization"),
    });
    const list = u.pathname === "/api/v1/vms" ? { key: "vms", items: vms } : lists[u.pathname];
    if (list) {
      const limit = Math.min(Number(u.searchParams.get("limit") ?? 500), 2);
      const from = Number(u.searchParams.get("continue") ?? 0);
      const page = list.items.slice(from, from + limit);
      const next = from + limit < list.items.length ? { continue: String(from + limit) } : {};
      return Response.json({ [list.key]: page, ...next });
    }
    const kind = u.pathname.split("/").pop()!;
    return Response.json({ [kind]: [{ name: `${label}-${kind.replace(/s$/, "")}` }] });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    close: () => server.shutdown(),
  };
}

/** Runs `fn` with environment variables set (or deleted, for undefined), restoring them after. */
export async function withEnv<T>(
  vars: Record<string, string | undefined>,
  fn: () => Promise<T>,
): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, val] of Object.entries(v)) {
      if (val === undefined) Deno.env.delete(k);
      else Deno.env.set(k, val);
    }
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

/** A stand-in for what a command under test must not use. */
export function notUsedHere<T>(what: string): T {
  return new Proxy({}, {
    get: (_t, prop) => {
      throw new Error(`${what}.${String(prop)} used by a command under test`);
    },
  }) as T;
}

/**
 * The real API app of a one-voter leader served on a free port, without a hypervisor (a command
 * that needs one fails naming it); `cli` runs the CLI against it with the admin token.
 * @param more what the app gets beside the stand-ins (e.g. an operation runner under test)
 * @param opts.level the cluster level to start at (default: this program's)
 */
export async function servedCluster(
  more: (c: TestCluster) => Partial<AppDeps> = () => ({}),
  opts: { level?: number } = {},
) {
  const c = await TestCluster.start({}, opts);
  const app = createApp(c.node, {
    blobs: await new BlobStore(`${c.dataDir}/blobs`).init(),
    leases: new LeaseTable(() => c.node.isLeader() ? c.node.raft.status().term : null),
    host: notUsedHere<VmHost>("host"),
    migrator: notUsedHere<Migrator>("migrator"),
    ...more(c),
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  const url = `http://127.0.0.1:${server.addr.port}`;
  const cli = (...args: string[]) =>
    capture(() => runCli([...args, "--server", url, "--token", c.adminToken]));
  const stop = async () => {
    await server.shutdown();
    await c.stop();
  };
  return { c, url, cli, stop };
}
