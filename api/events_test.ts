/**
 * GET /api/v1/events over the real app and a real one-voter leader,
 * in-process: the stream's events, filters and their validation, who may
 * read audit events, resume with Last-Event-ID or `since`, the gap beyond
 * retention, heartbeats, and that a client going away leaves no listener.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { auditBufferOf, delay } from "../core/cluster/mod.ts";
import type { ClusterEvent } from "../core/events/mod.ts";
import { readSse, type SseMessage } from "../core/events/sse.ts";
import { startTestApp, type TestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Opens the stream; the caller reads `messages` and cancels `res.body` when done. */
async function open(
  t: TestApp,
  query: string,
  token: string,
  headers: Record<string, string> = {},
) {
  const res = await t.app.request(`/api/v1/events${query}`, {
    headers: { authorization: `Bearer ${token}`, ...headers },
  });
  assertEquals(res.status, 200, await (res.status === 200 ? "" : res.text()));
  assertEquals(res.headers.get("content-type"), "text/event-stream");
  return { res, messages: readSse(res.body!) };
}

/** Every message of a stream that ends by itself (`follow=false`). */
async function all(t: TestApp, query: string, token: string, headers = {}) {
  const { messages } = await open(t, query, token, headers);
  const out: SseMessage[] = [];
  for await (const m of messages) out.push(m);
  return out;
}

const events = (list: SseMessage[]): ClusterEvent[] =>
  list.filter((m) => m.id !== undefined).map((m) => JSON.parse(m.data));

async function createVm(t: TestApp, name: string) {
  const r = await t.call("POST", "/api/v1/vms", {
    token: t.tokens.operator,
    body: { name, image: "img", cpus: 1, memoryMiB: 64, start: false },
  });
  assertEquals(r.status, 201, JSON.stringify(r.body));
}

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "events API: filters, bad filters, and audit events for admins only",
  ...opts,
}, async () => {
  const t = await startTestApp();
  try {
    await createVm(t, "web1");
    await createVm(t, "web2");
    await auditBufferOf(t.c.node).flush();
    for (let i = 0; i < 100 && auditBufferOf(t.c.node).pending; i++) await delay(20);

    const asAdmin = events(await all(t, "?follow=false", t.tokens.admin));
    assert(asAdmin.some((e) => e.type === "audit"), "admins see audit events");
    const asViewer = events(await all(t, "?follow=false", t.tokens.viewer));
    assert(asViewer.length > 0 && asViewer.every((e) => e.type !== "audit"), "viewers do not");
    const created = events(await all(t, "?follow=false&type=vm&resource=web2", t.tokens.viewer));
    assertEquals(created.map((e) => [e.action, e.resource]), [["vm.created", "web2"]]);
    const audits = events(
      await all(t, "?follow=false&type=audit&resource=vm/web1", t.tokens.admin),
    );
    assertEquals(audits.map((e) => [e.details.method, e.details.route]), [["POST", "/api/v1/vms"]]);

    const status = async (query: string, token?: string, headers: Record<string, string> = {}) => {
      const res = await t.app.request(`/api/v1/events${query}`, {
        headers: token ? { authorization: `Bearer ${token}`, ...headers } : headers,
      });
      const body = await res.json();
      return [res.status, body.error.code];
    };
    assertEquals(await status("?type=vm,bogus", t.tokens.admin), [400, "validation"]);
    assertEquals(await status("?type=", t.tokens.admin), [400, "validation"]);
    assertEquals(await status("?since=yesterday", t.tokens.admin), [400, "validation"]);
    assertEquals(
      await status("", t.tokens.admin, { "last-event-id": "x-1" }),
      [400, "validation"],
    );
    assertEquals(await status("?what=1", t.tokens.admin), [400, "validation"]);
    assertEquals(await status("?type=audit", t.tokens.viewer), [403, "forbidden"]);
    assertEquals(await status("?type=vm,audit", t.tokens.operator), [403, "forbidden"]);
    assertEquals(await status("?type=vm"), [401, "unauthorized"]);
  } finally {
    await t.c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name:
    "events API: a follower sees changes live; resuming (header or since) gets exactly what it missed",
  ...opts,
}, async () => {
  const t = await startTestApp();
  try {
    const base = t.c.node.fsm.eventListenerCount();
    const live = await open(t, "?type=vm", t.tokens.viewer);
    await createVm(t, "a1");
    const first = (await live.messages.next()).value as SseMessage;
    const ev = JSON.parse(first.data) as ClusterEvent;
    assertEquals([ev.action, ev.resource, first.id], ["vm.created", "a1", ev.id]);
    assertEquals(t.c.node.fsm.eventListenerCount(), base + 1);
    // The client goes away: its listener goes too.
    await live.res.body!.cancel().catch(() => {});
    await live.messages.return(undefined);
    for (let i = 0; i < 200 && t.c.node.fsm.eventListenerCount() > base; i++) await delay(10);
    assertEquals(t.c.node.fsm.eventListenerCount(), base, "no listener left behind");

    // Missed while away.
    await createVm(t, "a2");
    await createVm(t, "a3");
    const byHeader = events(
      await all(t, "?type=vm&follow=false", t.tokens.viewer, { "last-event-id": first.id! }),
    );
    assertEquals(byHeader.map((e) => e.resource), ["a2", "a3"]);
    const bySince = events(
      await all(t, `?type=vm&follow=false&since=${first.id}`, t.tokens.viewer),
    );
    assertEquals(bySince.map((e) => e.id), byHeader.map((e) => e.id));
    // The header wins over the URL's since (EventSource keeps its first URL on reconnects).
    const both = events(
      await all(t, `?type=vm&follow=false&since=${first.id}`, t.tokens.viewer, {
        "last-event-id": byHeader[0].id,
      }),
    );
    assertEquals(both.map((e) => e.resource), ["a3"]);
    assertEquals(t.c.node.fsm.eventListenerCount(), base, "ended streams leave no listener");
  } finally {
    await t.c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name:
    "events API: a resume older than events.keepCount starts with a gap; idle streams get keepalives",
  ...opts,
}, async () => {
  const t = await startTestApp();
  try {
    const patched = await t.call("PATCH", "/api/v1/config", {
      token: t.tokens.admin,
      body: { "events.keepCount": 10 },
    });
    assertEquals(patched.status, 200, JSON.stringify(patched.body));
    await createVm(t, "g0");
    const [old] = events(await all(t, "?type=vm&follow=false&tail=1", t.tokens.viewer));
    for (let i = 1; i <= 12; i++) await createVm(t, `g${i}`);
    const resumed = await all(t, "?follow=false", t.tokens.admin, { "last-event-id": old.id });
    assertEquals(resumed[0].event, "gap");
    const gap = JSON.parse(resumed[0].data);
    assertEquals(gap.after, old.id);
    assert(/no longer kept/.test(gap.message), gap.message);
    const after = events(resumed.slice(1));
    assertEquals(after[0].id, gap.oldest, "then every kept event, from the oldest");
    assertEquals(after.length, 11);

    Deno.env.set("NOVACTL_EVENTS_HEARTBEAT_MS", "30");
    try {
      const idle = await open(t, "?type=operation", t.tokens.viewer);
      const m = (await idle.messages.next()).value as SseMessage;
      assertEquals(m.comment, "keepalive");
      await idle.messages.return(undefined);
    } finally {
      Deno.env.delete("NOVACTL_EVENTS_HEARTBEAT_MS");
    }
  } finally {
    await t.c.stop();
  }
});

testWithTimeout({
  timeoutMs: MINUTE,
  name: "events API: ?token= for EventSource (GET only), and a sent header wins",
  ...opts,
}, async () => {
  const t = await startTestApp();
  try {
    await createVm(t, "q1");
    const viaQuery = await t.app.request(
      `/api/v1/events?follow=false&type=vm&token=${encodeURIComponent(t.tokens.viewer)}`,
    );
    assertEquals(viaQuery.status, 200);
    const got = [];
    for await (const m of readSse(viaQuery.body!)) got.push(m);
    assert(events(got).some((e) => e.resource === "q1"), "the viewer's stream has the VM");

    const bad = await t.app.request("/api/v1/events?follow=false&token=nope");
    assertEquals(bad.status, 401);
    await bad.body?.cancel();
    const none = await t.app.request("/api/v1/events?follow=false");
    assertEquals(none.status, 401);
    await none.body?.cancel();
    // A client that sends the header means it: a wrong one is not rescued by the query.
    const both = await t.app.request(
      `/api/v1/events?follow=false&token=${encodeURIComponent(t.tokens.viewer)}`,
      { headers: { authorization: "Bearer wrong" } },
    );
    assertEquals(both.status, 401);
    await both.body?.cancel();
    // Other routes take the header only.
    const vms = await t.call("GET", `/api/v1/vms?token=${encodeURIComponent(t.tokens.viewer)}`);
    assertEquals(vms.status, 401);
  } finally {
    await t.c.stop();
  }
});
