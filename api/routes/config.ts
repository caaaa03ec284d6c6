/** /api/v1/config: versioned cluster configuration with If-Match and history. */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import {
  configHistory,
  patchConfig,
  readConfig,
  readConfigKey,
  replaceConfig,
  rollbackConfig,
  setConfigKey,
} from "../../core/cluster/mod.ts";
import type { ConfigVersion } from "../../core/fsm/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { ifMatchVersion, parseBody } from "../validate.ts";
import type { Env } from "../context.ts";
import type { Context, MiddlewareHandler } from "hono";
import { doc, parseQuery } from "../openapi/mod.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";
import { afterOf, isNumber, limitOf, listBody, pageOfRead, pageQueryOf } from "../pagination.ts";

const configDoc = z.record(z.unknown()).describe("config keys and values");
const replaceSchema = z.object({ config: configDoc }).strict();
const setKeySchema = z.object({ value: z.unknown() }).strict();
const rollbackSchema = z.object({ version: z.number().int().positive() }).strict();
/** Versions a page of the history holds without ?limit. */
const HISTORY_PAGE = 100;
const historyQuery = pageQueryOf(10_000);
const IF_MATCH = "Send `If-Match: VERSION` to refuse (409) a change over a newer version.";

function withEtag(c: Context, cv: ConfigVersion, status = 200): Response {
  c.header("ETag", `"${cv.version}"`);
  return c.json(cv, status as 200);
}

/**
 * Test hook, a planted bug that tests/linearizability_test.ts sets to prove its checker
 * notices stale reads. NOVACTL_TESTING_STALE_READS changes `GET /api/v1/config/:key`:
 * - `replica`: every node answers from its own replica, neither forwarding to the leader
 *   nor confirming leadership with ReadIndex (a partitioned follower serves old values);
 * - `leader`: reads are still forwarded, but the leader answers without ReadIndex (a
 *   deposed leader that has not noticed yet, e.g. after SIGSTOP, serves old values).
 * Never set it anywhere else; unset, reads are linearizable.
 */
const STALE_READS_FOR_TESTING = Deno.env.get("NOVACTL_TESTING_STALE_READS");

/** The planted bug's read: whatever this node's replica holds, unconfirmed. */
function unconfirmedKeyRead(node: ClusterNode): MiddlewareHandler<Env> {
  return async (c, next) => {
    const { config, version } = node.fsm.config();
    const key = c.req.param("key") ?? "";
    if (!(key in config)) return await next(); // e.g. /history: the usual route
    return c.json({ key, value: (config as Record<string, unknown>)[key], version });
  };
}

export function configRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  if (STALE_READS_FOR_TESTING === "replica") {
    // Registered first, so it answers before leaderOnly can forward.
    app.get("/:key", bearerAuth(node), unconfirmedKeyRead(node));
  }
  app.use("*", bearerAuth(node), leaderOnly(node));
  if (STALE_READS_FOR_TESTING === "leader") app.get("/:key", unconfirmedKeyRead(node));

  const getDoc = doc({ summary: "The configuration, with its version as ETag" });
  app.get("/", getDoc, async (c) => withEtag(c, await readConfig(node)));

  const getHistoryDoc = doc({
    summary:
      `Configuration versions, newest first (${HISTORY_PAGE} a page unless ?limit), and the retention`,
    query: historyQuery,
    response: listOf("versions", recordSchema).extend({ retention: recordSchema }),
  });
  app.get("/history", getHistoryDoc, async (c) => {
    const q = parseQuery(c, historyQuery);
    const limit = limitOf(q, HISTORY_PAGE);
    const before = afterOf("configVersions", q.continue, isNumber);
    const versions = await configHistory(node, limit + 1, before);
    const page = pageOfRead(versions, limit, { list: "configVersions", key: (v) => v.version });
    // What retention keeps, so a caller knows which versions a rollback can reach.
    return c.json({ ...listBody("versions", page), retention: node.fsm.configRetention() });
  });

  const getKeyDoc = doc({ summary: "One configuration key, with the version as ETag" });
  app.get("/:key", getKeyDoc, async (c) => {
    const r = await readConfigKey(node, c.req.param("key"));
    c.header("ETag", `"${r.version}"`);
    return c.json(r);
  });

  const putDoc = doc({
    summary: "Replace the configuration",
    description: IF_MATCH,
    body: replaceSchema,
  });
  app.put("/", putDoc, requireRole("admin"), async (c) => {
    const body = await parseBody(c, replaceSchema);
    return withEtag(
      c,
      await replaceConfig(node, body.config, c.get("principal").name, ifMatchVersion(c)),
    );
  });

  const patchDoc = doc({
    summary: "Change some configuration keys",
    description: IF_MATCH,
    body: configDoc,
  });
  app.patch("/", patchDoc, requireRole("admin"), async (c) => {
    const body = await parseBody(c, configDoc);
    return withEtag(c, await patchConfig(node, body, c.get("principal").name, ifMatchVersion(c)));
  });

  const putKeyDoc = doc({
    summary: "Set one configuration key",
    description: IF_MATCH,
    body: setKeySchema,
  });
  app.put("/:key", putKeyDoc, requireRole("admin"), async (c) => {
    const body = await parseBody(c, setKeySchema);
    const key = c.req.param("key");
    const r = await setConfigKey(
      node,
      key,
      body.value,
      c.get("principal").name,
      ifMatchVersion(c),
    );
    c.header("ETag", `"${r.version}"`);
    return c.json(r);
  });

  const postRollbackDoc = doc({
    summary: "Roll back to a kept version",
    description: IF_MATCH,
    body: rollbackSchema,
  });
  app.post("/rollback", postRollbackDoc, requireRole("admin"), async (c) => {
    const { version } = await parseBody(c, rollbackSchema);
    return withEtag(
      c,
      await rollbackConfig(node, version, c.get("principal").name, ifMatchVersion(c)),
    );
  });

  return app;
}
