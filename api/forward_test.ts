import { Hono } from "hono";
import type { ClusterNode } from "../core/cluster/mod.ts";
import { assertEquals } from "../core/testing/assert.ts";
import type { Env } from "./context.ts";
import { APPLIED_HEADER, FORWARDED_HEADER, leaderOnly } from "./forward.ts";

/** Just what leaderOnly and forwardTo use of a node, with a leader reached through `fetch`. */
function fakeNode(opts: {
  leader: boolean;
  applied: number;
  fetch?: (url: string, init?: RequestInit) => Promise<Response>;
}) {
  const waited: number[] = [];
  let release = () => {};
  const node = {
    id: opts.leader ? "n1" : "n2",
    identity: { url: "https://n1" },
    isLeader: () => opts.leader,
    leaderId: () => "n1",
    leaderUrl: () => "https://n1",
    fsm: { appliedIndex: () => opts.applied },
    peerHttp: { fetch: opts.fetch },
    waitApplied: (index: number) => {
      waited.push(index);
      return new Promise<void>((r) => release = r);
    },
  };
  return { node: node as unknown as ClusterNode, waited, release: () => release() };
}

function appOf(node: ClusterNode) {
  const app = new Hono<Env>();
  app.use("*", async (c, next) => (c.set("node", node), await next()));
  app.post("/w", leaderOnly(node), (c) => c.json({ ok: true }, 201));
  return app;
}

Deno.test("a forwarded write: the leader says how far it applied; only forwarded requests get it", async () => {
  const { node } = fakeNode({ leader: true, applied: 42 });
  const app = appOf(node);
  const forwarded = await app.request("/w", {
    method: "POST",
    headers: { [FORWARDED_HEADER]: "n2" },
  });
  assertEquals([forwarded.status, forwarded.headers.get(APPLIED_HEADER)], [201, "42"]);
  const direct = await app.request("/w", { method: "POST" });
  assertEquals(direct.headers.get(APPLIED_HEADER), null);
});

Deno.test("a forwarded write: the follower answers only once it applied the leader's index", async () => {
  const leaderAnswer = () =>
    Promise.resolve(
      new Response('{"ok":true}', { status: 201, headers: { [APPLIED_HEADER]: "42" } }),
    );
  const f = fakeNode({ leader: false, applied: 40, fetch: leaderAnswer });
  const pending = Promise.resolve(appOf(f.node).request("/w", { method: "POST", body: "{}" }));
  let answered = false;
  pending.then(() => answered = true);
  await new Promise((r) => setTimeout(r, 20));
  assertEquals([f.waited, answered], [[42], false], "answered before applying its own write");
  f.release();
  const res = await pending;
  assertEquals(res.status, 201);
});
