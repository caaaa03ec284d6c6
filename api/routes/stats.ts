/**
 * Metrics history of VMs and hosts (host/metrics/), answered by the host that keeps it:
 *
 * - `GET /api/v1/vms/:name/stats?since=1h&step=10s` on the VM's host (forwarded there);
 * - `GET /api/v1/nodes/:name/stats?since=…&step=…` on that node.
 *
 * Both answer `{current, since, step, points}`: `current` is the newest sample (null until
 * the host has two readings), `points` are `{t, ...fields}` oldest first, `step` apart.
 * Unknown `since` or `step` values are 400 naming the field (host/metrics/query.ts).
 */
import { type Context, Hono, type MiddlewareHandler } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { NotFoundError } from "../../core/errors/mod.ts";
import {
  type HistoryWindow,
  historyWindow,
  type HostSample,
  type Latest,
  type MetricsSampler,
  type VmSample,
} from "../../host/metrics/mod.ts";
import type { Point } from "../../host/metrics/history.ts";
import { hostOnly, runsOn } from "../forward.ts";
import type { Env } from "../context.ts";
import { doc, parseQuery } from "../openapi/mod.ts";

/** Query strings are short: a longer one is not a duration anyway. */
const statsQuerySchema = z.object({
  since: z.string().max(16).optional(),
  step: z.string().max(16).optional(),
});

function windowOf(c: Context): HistoryWindow {
  return historyWindow(parseQuery(c, statsQuerySchema), Date.now());
}

/** Bad input is refused where it arrives, before forwarding to a host that may be down. */
const validQuery: MiddlewareHandler<Env> = async (c, next) => {
  windowOf(c);
  await next();
};

const iso = (t: number) => new Date(t).toISOString();

/** A sample with its time (ISO 8601). */
export type Stamped<T> = { t: string } & T;

/** What both stats answers have: the newest sample and the history. */
export interface StatsHistory<T> {
  current: Stamped<T> | null;
  /** The window's start (ISO 8601). */
  since: string;
  step: string;
  stepSeconds: number;
  /** `{t, ...fields}` oldest first; a field is null when nothing was sampled for it. */
  points: Stamped<{ [K in keyof T]: number | null }>[];
}

/** `GET /api/v1/vms/:name/stats`; the wire type the CLI reads. */
export interface VmStatsView extends StatsHistory<VmSample> {
  vm: string;
  /** The host that answered (the VM's). */
  node: string;
  state: string | null;
}

/** `GET /api/v1/nodes/:name/stats`; `vms` are the VMs that host samples now. */
export interface NodeStatsView extends StatsHistory<HostSample> {
  node: string;
  vms: ({ name: string } & VmSample)[];
}

function view<T extends object>(
  latest: Latest<T> | null,
  w: HistoryWindow,
  points: Point[],
): StatsHistory<T> {
  return {
    current: latest ? { t: iso(latest.t), ...latest.sample } : null,
    since: iso(w.from),
    step: w.step,
    stepSeconds: w.stepMs / 1000,
    points: points.map((p) => ({ t: iso(p.t), ...p.fields }) as StatsHistory<T>["points"][number]),
  };
}

/** Mounted under `/api/v1/vms` behind its bearer authentication. */
export function vmStatsRoutes(node: ClusterNode, stats: MetricsSampler | undefined): Hono<Env> {
  const app = new Hono<Env>();
  const getStatsDoc = doc({
    summary: "A VM's metrics history, from its host",
    query: statsQuerySchema,
  });
  app.get("/:name/stats", getStatsDoc, validQuery, hostOnly(node), (c) => {
    const name = c.req.param("name");
    const w = windowOf(c);
    const vm = node.fsm.vm(name);
    return c.json<VmStatsView>({
      vm: name,
      node: node.id,
      state: vm?.state ?? null,
      ...view(stats?.latestVm(name) ?? null, w, stats?.vmHistory(name, w) ?? []),
    });
  });
  return app;
}

/** Mounted under `/api/v1/nodes` behind its bearer authentication. */
export function nodeStatsRoutes(node: ClusterNode, stats: MetricsSampler | undefined): Hono<Env> {
  const app = new Hono<Env>();
  const onThatNode = runsOn(node, (c) => {
    const name = c.req.param("name") ?? "";
    if (!node.fsm.node(name) && !node.fsm.member(name)) throw new NotFoundError("node", name);
    return { member: name, what: `node "${name}"` };
  });
  const getStatsDoc2 = doc({
    summary: "A host's metrics history and its VMs' newest samples",
    query: statsQuerySchema,
  });
  app.get("/:name/stats", getStatsDoc2, validQuery, onThatNode, (c) => {
    const w = windowOf(c);
    return c.json<NodeStatsView>({
      node: node.id,
      // What this host samples now: `novactl top` lists them.
      vms: (stats?.vmNames() ?? []).sort().map((name) => ({
        name,
        ...stats!.latestVm(name)!.sample,
      })),
      ...view(stats?.latestHost() ?? null, w, stats?.hostHistory(w) ?? []),
    });
  });
  return app;
}
