/**
 * GET /api/v1/events: the cluster's event stream as Server-Sent Events
 * (core/events/). Every node holds the same events under the same ids, so it
 * answers on its own (no forwarding), and a client may resume on any node.
 *
 * Query:
 * - `type=vm,operation,node,ha,audit`: only these types (an unknown one: 400).
 * - `resource=NAME`: only events about NAME (a VM's or node's name, `kind/name`, an
 *   operation's id, or the VM or node an operation acts on).
 * - `since=ID`, or the `Last-Event-ID` header (which wins: EventSource sends it on
 *   reconnect with the URL it first used): events after ID.
 * - `tail=N`: without a resume id, start with the newest N matching events (default: 0
 *   when following, 100 when not).
 * - `follow=false`: end once caught up (default: follow until the client goes away).
 * - `token=`: the API token, for clients that cannot send an Authorization header (the
 *   browser's EventSource); never logged (the access log and audit leave queries out).
 *
 * Each event is `id: <raftIndex>-<n>` and one `data:` line of JSON
 * (`{id, type, action, kind, resource, target, at, details}`), with no `event:` field
 * (EventSource's `onmessage` gets them all). If the resume id is older than the events
 * kept (`events.keepCount`), the stream says so first with `event: gap`, whose data names
 * the id asked for and the oldest kept, then goes on with every kept event: the client
 * lost events and must re-read the state it follows (as a Kubernetes watch answers 410
 * Gone, but within the stream, so EventSource clients see it instead of failing). Comment
 * lines (`: keepalive`) go out after 15 s without events, so proxies keep the connection.
 *
 * Viewers may read it; `audit` events name every token and client address, so they are
 * for admins only, as `GET /api/v1/audit` is: a viewer or operator asking for them gets
 * 403, and their streams without a type filter leave them out.
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { ForbiddenError, ValidationError } from "../../core/errors/mod.ts";
import {
  EVENT_TYPES,
  eventStream,
  type EventType,
  isEventType,
  parseEventId,
} from "../../core/events/mod.ts";
import { metrics } from "../../core/metrics/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import type { Env } from "../context.ts";
import { doc, parseQuery } from "../openapi/mod.ts";

const querySchema = z.object({
  type: z.string().max(256).optional(),
  resource: z.string().min(1).max(512).optional(),
  since: z.string().max(64).optional(),
  token: z.string().max(512).optional(),
  tail: z.coerce.number().int().min(0).max(100_000).optional(),
  follow: z.enum(["true", "false", "1", "0"]).optional(),
}).strict();

/** Milliseconds without events before a keepalive comment (env NOVACTL_EVENTS_HEARTBEAT_MS). */
function heartbeatMs(): number {
  const v = Number(Deno.env.get("NOVACTL_EVENTS_HEARTBEAT_MS"));
  return Number.isSafeInteger(v) && v > 0 ? v : 15_000;
}

/** The routes under /api/v1/events (see the module doc). */
export function eventRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  // `?token=` too: the dashboard's EventSource cannot send an Authorization header.
  app.use("*", bearerAuth(node, { queryToken: true }), requireRole("viewer"));
  const getDoc = doc({
    summary: "The event stream (Server-Sent Events)",
    query: querySchema,
    responseType: "text/event-stream",
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, querySchema);
    const admin = c.get("principal").role === "admin";
    let types: EventType[] | undefined;
    if (q.type !== undefined) {
      const asked = q.type.split(",").map((t) => t.trim()).filter((t) => t !== "");
      const bad = asked.filter((t) => !isEventType(t));
      if (bad.length || !asked.length) {
        throw ValidationError.field(
          "type",
          `unknown event type ${bad.map((t) => `"${t}"`).join(", ") || "(none)"}; ` +
            `one or more of ${EVENT_TYPES.join(", ")}`,
        );
      }
      types = [...new Set(asked as EventType[])];
      if (!admin && types.includes("audit")) {
        throw new ForbiddenError("audit events are for admins only; admin required");
      }
    } else if (!admin) {
      types = EVENT_TYPES.filter((t) => t !== "audit");
    }
    const resumeText = c.req.header("last-event-id") ?? q.since;
    const since = resumeText === undefined || resumeText === "" ? null : parseEventId(resumeText);
    if (resumeText && !since) {
      throw ValidationError.field(
        c.req.header("last-event-id") !== undefined ? "Last-Event-ID" : "since",
        `"${resumeText}" is not an event id (<raftIndex>-<n>, e.g. 1042-0)`,
      );
    }
    const follow = q.follow === undefined || q.follow === "true" || q.follow === "1";
    const tail = q.tail ?? (follow ? 0 : 100);

    c.header("x-accel-buffering", "no"); // nginx: pass events on as they come
    return streamSSE(c, async (stream) => {
      const ac = new AbortController();
      stream.onAbort(() => ac.abort());
      const items = eventStream(
        {
          reads: node.fsm.events,
          onEvents: (l) => node.fsm.onEvents(l),
          get closed() {
            return node.fsm.closed;
          },
        },
        {
          since,
          tail,
          filter: { types, resource: q.resource },
          follow,
          signal: ac.signal,
          heartbeatMs: heartbeatMs(),
        },
      );
      metrics.eventStreams.inc();
      try {
        for await (const item of items) {
          if ("event" in item) {
            await stream.writeSSE({ id: item.event.id, data: JSON.stringify(item.event) });
          } else if ("gap" in item) {
            await stream.writeSSE({ event: "gap", data: JSON.stringify(item.gap) });
          } else {
            await stream.write(": keepalive\n\n");
          }
          if (stream.aborted) break;
        }
      } finally {
        ac.abort();
        await items.return(undefined);
        metrics.eventStreams.dec();
      }
    });
  });
  return app;
}
