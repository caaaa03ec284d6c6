/** /api/v1/cluster: status, join tokens, join, remove, leadership transfer. */
import { Hono } from "hono";
import { z } from "zod";
import {
  admitMember,
  caPemOf,
  type ClusterNode,
  type ClusterStatus,
  createJoinToken,
  NotLeaderRetry,
  removeMember,
  transferLeader,
} from "../../core/cluster/mod.ts";
import { applyRebalance, rebalancePlan } from "../../core/cluster/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { FORWARDED_HEADER, forwardTo, leaderOnly } from "../forward.ts";
import { parseBody, parseDuration, readJson } from "../validate.ts";
import { zodToValidationError } from "../errors.ts";
import { NoQuorumError, NotLeaderError } from "../../core/errors/mod.ts";
import { fingerprint } from "../../core/pki/mod.ts";
import { inventorySchema, labelsSchema } from "../../core/fsm/command_schemas.ts";
import { openClusterBackup } from "../../core/recovery/mod.ts";

/** Response headers of `POST /cluster/backup`: the applied index and SHA-256 it was taken at. */
export const BACKUP_INDEX_HEADER = "x-novactl-backup-index";
export const BACKUP_SHA256_HEADER = "x-novactl-backup-sha256";

/** A join request is a name, a URL, a token, a CSR and a small inventory. */
export const MAX_JOIN_BODY_BYTES = 64 << 10;
import type { Env } from "../context.ts";
import { pagedList, pageQuery } from "../pagination.ts";
import { doc, parseQuery, queryFlag } from "../openapi/mod.ts";
import { clusterStatusSchema, listOf, recordSchema } from "../openapi/schemas.ts";

const NAME = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});

export const joinSchema = z.object({
  name: NAME,
  url: z.string().url().max(2048),
  token: z.string().min(1).max(512),
  csr: z.string().min(1).max(8192),
  inventory: inventorySchema,
  labels: labelsSchema.default({}),
});

const joinTokenSchema = z.object({
  ttl: z.union([z.string(), z.number()]).optional().describe(
    "a duration (30m, 24h) or seconds; default 1h",
  ),
});
const transferSchema = z.object({ name: NAME });
const rebalanceQuery = z.object({ dryRun: queryFlag.describe("plan only, move nothing") });
const statusQuery = z.object({
  local: queryFlag.describe("this node's own view instead of the leader's"),
});

/** Cluster status plus the CA's fingerprint, which clients compare before pinning the CA. */
function statusOf(node: ClusterNode): ClusterStatus & { caFingerprint: string } {
  return { ...node.status(), caFingerprint: fingerprint(caPemOf(node)) };
}

export function clusterRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();

  // The CA certificate, public: joiners fetch it untrusted and compare its fingerprint
  // with the one in their join token; clients may fetch it to pin (e.g. curl --cacert).
  const getCaDoc = doc({
    summary: "The cluster CA certificate (PEM), public",
    responseType: "application/x-pem-file",
  });
  app.get(
    "/ca",
    getCaDoc,
    (c) => c.body(caPemOf(node), 200, { "content-type": "application/x-pem-file" }),
  );

  // Joining nodes have no API token yet: the join token in the body authenticates them.
  // The body is capped (64 KiB) before anything else, also on a follower that forwards it.
  const postJoinDoc = doc({
    summary: "Join a node (authenticated by the join token in the body)",
    body: joinSchema,
    status: 201,
  });
  app.post("/join", postJoinDoc, async (c) => {
    const raw = await readJson(c, MAX_JOIN_BODY_BYTES);
    if (!node.isLeader()) {
      if (c.req.header(FORWARDED_HEADER)) throw new NotLeaderError(node.leaderId());
      const url = node.leaderUrl();
      if (!url) throw new NoQuorumError();
      return await forwardTo(c, url, node.id, 30_000, JSON.stringify(raw));
    }
    const parsed = joinSchema.safeParse(raw);
    if (!parsed.success) throw zodToValidationError(parsed.error);
    return c.json(await admitMember(node, parsed.data), 201);
  });

  app.use("*", bearerAuth(node));

  // `?local=true` answers from this node's own view (for debugging and tests) instead of the leader's.
  const getDoc = doc({
    summary: "Cluster status: leader, term, indexes, members",
    query: statusQuery,
    response: clusterStatusSchema,
  });
  app.get(
    "/",
    getDoc,
    async (c, next) => {
      if (parseQuery(c, statusQuery).local === "true") return c.json(statusOf(node));
      await next();
    },
    leaderOnly(node),
    (c) => c.json(statusOf(node)),
  );

  const postTokensDoc = doc({
    summary: "Create a single-use join token",
    body: joinTokenSchema,
    status: 201,
  });
  app.post("/tokens", postTokensDoc, requireRole("admin"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, joinTokenSchema);
    const ttl = body.ttl === undefined
      ? 3_600_000
      : typeof body.ttl === "number"
      ? body.ttl * 1000
      : parseDuration(body.ttl, "ttl");
    return c.json(await createJoinToken(node, ttl, c.get("principal").name), 201);
  });

  const getTokensDoc = doc({
    summary: "List join tokens",
    query: pageQuery,
    response: listOf("tokens", recordSchema),
  });
  app.get("/tokens", getTokensDoc, requireRole("admin"), leaderOnly(node), async (c) => {
    const q = parseQuery(c, pageQuery);
    await node.linearizableRead();
    const spec = {
      list: "joinTokens",
      key: (t: { createdAt: string; id: string }) => [t.createdAt, t.id],
    };
    return c.json(pagedList("tokens", node.fsm.joinTokens(), q, spec));
  });

  const deleteMembersDoc = doc({ summary: "Remove a member" });
  app.delete(
    "/members/:name",
    deleteMembersDoc,
    requireRole("admin"),
    leaderOnly(node),
    async (c) => {
      const name = c.req.param("name");
      try {
        await removeMember(node, name);
      } catch (err) {
        if (!(err instanceof NotLeaderRetry)) throw err;
        const url = node.leaderUrl();
        if (!url) throw err;
        return await forwardTo(c, url, node.id);
      }
      return c.json({ removed: name });
    },
  );

  // A consistent backup of the replicated state, streamed (core/recovery/backup.ts). Admin only:
  // it holds the CA key and every token's hash. Audited as every POST is.
  const postBackupDoc = doc({
    summary: "A consistent backup of the replicated state (NDJSON stream)",
    responseType: "application/x-ndjson",
  });
  app.post(
    "/backup",
    postBackupDoc,
    requireRole("admin"),
    leaderOnly(node, { timeoutMs: null }),
    async (c) => {
      await node.linearizableRead();
      const { header, body } = await openClusterBackup(node);
      return c.body(body, 200, {
        "content-type": "application/x-ndjson",
        "content-disposition":
          `attachment; filename="novactl-${header.clusterId}-${header.index}.backup"`,
        [BACKUP_INDEX_HEADER]: String(header.index),
        [BACKUP_SHA256_HEADER]: header.sha256,
      });
    },
  );

  const postRebalanceDoc = doc({
    summary: "Rebalance VMs by live migration (202 with its operation)",
    query: rebalanceQuery,
    status: [200, 202],
  });
  app.post("/rebalance", postRebalanceDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const dryRun = parseQuery(c, rebalanceQuery).dryRun === "true";
    await node.linearizableRead();
    const plan = rebalancePlan(node);
    if (dryRun) return c.json({ dryRun: true, ...plan });
    if (!plan.moves.length) return c.json({ dryRun: false, ...plan, operation: null });
    const op = await applyRebalance(node, plan, c.get("principal").name);
    return c.json({ dryRun: false, ...plan, operation: op }, 202);
  });

  const postTransferLeaderDoc = doc({
    summary: "Hand leadership to another voter",
    body: transferSchema,
  });
  app.post(
    "/transfer-leader",
    postTransferLeaderDoc,
    requireRole("admin"),
    leaderOnly(node),
    async (c) => {
      const { name } = await parseBody(c, transferSchema);
      await transferLeader(node, name);
      return c.json({ leader: name });
    },
  );

  return app;
}
