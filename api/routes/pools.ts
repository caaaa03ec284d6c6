/**
 * /api/v1/pools: storage pools (core/fsm/pools.ts, host/storage/host_pools.ts).
 *
 * - `GET /` every pool with each host's capacity and usage; `GET /:name`
 * - `POST /` `{name, driver: "dir"|"shared-dir"|"btrfs", source, node?, sizeBytes?, mount?}`:
 *   the request runs on the pool's host (`node`, else the member that took it), which checks
 *   the path (a btrfs pool must be on btrfs) or, with `sizeBytes`, makes a btrfs image at
 *   `source` and mounts it on `mount` (default `source + ".mnt"`); only then is the pool
 *   recorded. A refused record takes back what the host made.
 * - `DELETE /:name` (409 while VM disks or volumes are in it); a loop-backed pool's host
 *   unmounts and removes its image.
 *
 * @module
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { ConflictError, NotFoundError, UnavailableError } from "../../core/errors/mod.ts";
import type { PoolRecord, PoolSpec } from "../../core/fsm/mod.ts";
import { checkSpec, POOL_NAME } from "../../core/fsm/pools.ts";
import type { VmHost } from "../../host/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { FORWARDED_HEADER, forwardTo } from "../forward.ts";
import { parseBody } from "../validate.ts";
import { authorship, type Env } from "../context.ts";
import type { Context } from "hono";
import { listBody, mapPage, pageQuery, paginate } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { withEtags } from "../etag.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";

const NAME = z.string().regex(POOL_NAME, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});
const PATH = z.string().min(1).max(1024).refine((p) => p.startsWith("/"), {
  message: "an absolute path",
});

export const poolSchema = z.object({
  name: NAME,
  driver: z.enum(["dir", "shared-dir", "btrfs"]),
  source: PATH,
  node: z.string().min(1).max(253).nullable().default(null),
  /** Makes a loop-backed btrfs image of this size at `source`. */
  sizeBytes: z.number().int().min(128 * 2 ** 20, "at least 128 MiB").max(2 ** 50).optional(),
  /** Where a loop-backed pool is mounted (default `source + ".mnt"`). */
  mount: PATH.optional(),
}).strict();

/**
 * Runs the rest of the request on member `target` (null or this node: here), forwarding the
 * already parsed `body` there once.
 */
export async function onMember(
  c: Context<Env>,
  node: ClusterNode,
  target: string | null,
  body: unknown,
  here: () => Promise<Response>,
): Promise<Response> {
  if (target === null || target === node.id) return await here();
  const member = node.fsm.member(target);
  if (!member) throw new ConflictError(`host ${target} is not a member of the cluster`);
  if (c.req.header(FORWARDED_HEADER)) {
    throw new ConflictError(`the request was forwarded to the wrong host; retry`);
  }
  try {
    return await forwardTo(c, member.url, node.id, 300_000, JSON.stringify(body));
  } catch (err) {
    throw new UnavailableError(`host ${target} is unreachable; retry later (${err})`);
  }
}

export function poolRoutes(node: ClusterNode, host: VmHost): Hono<Env> {
  const app = new Hono<Env>();
  const mustGet = (name: string): PoolRecord => {
    const p = node.fsm.pools.get(name);
    if (!p) throw new NotFoundError("pool", name);
    return p;
  };

  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => node.fsm.pools.get(c.req.param("name") ?? ""));
  const getDoc = doc({
    summary: "List storage pools with their usage per host",
    query: pageQuery,
    response: listOf("pools", recordSchema),
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    const page = paginate(node.fsm.pools.all(), q, { list: "pools", key: (p) => p.name });
    return c.json(listBody("pools", mapPage(page, (p) => node.fsm.pools.view(p.name))));
  });
  const getNameDoc = doc({ summary: "Show a storage pool" });
  app.get(
    "/:name",
    getNameDoc,
    (c) => c.json(node.fsm.pools.view(mustGet(c.req.param("name")).name)),
  );

  const postDoc = doc({ summary: "Create a storage pool", body: poolSchema, status: 201 });
  app.post("/", postDoc, requireRole("operator"), async (c) => {
    const body = await parseBody(c, poolSchema);
    const spec: PoolSpec = {
      name: body.name,
      driver: body.driver,
      source: body.sizeBytes !== undefined ? body.mount ?? `${body.source}.mnt` : body.source,
      node: body.node,
      loop: body.sizeBytes !== undefined ? { image: body.source, sizeBytes: body.sizeBytes } : null,
    };
    checkSpec(spec);
    if (node.fsm.pools.get(spec.name)) {
      throw new ConflictError(`name: pool "${spec.name}" already exists`, { field: "name" });
    }
    if (spec.node !== null && !node.fsm.node(spec.node)) {
      throw new NotFoundError("node", spec.node);
    }
    return await onMember(c, node, spec.node, body, async () => {
      const made = await host.pools.prepare(spec);
      try {
        const record = await host.cluster.report({
          op: "pool.create",
          pool: spec,
          ...authorship(c),
        });
        return c.json(record as PoolRecord, 201);
      } catch (err) {
        await made.undo().catch(() => {});
        throw err;
      }
    });
  });

  const deleteDoc = doc({ summary: "Delete a storage pool (409 while it has volumes)" });
  app.delete("/:name", deleteDoc, requireRole("operator"), async (c) => {
    const pool = mustGet(c.req.param("name"));
    return await onMember(c, node, pool.node, {}, async () => {
      const out = await host.cluster.report({
        op: "pool.delete",
        name: pool.name,
        ...authorship(c),
      });
      await host.pools.release(pool);
      return c.json(out);
    });
  });

  return app;
}
