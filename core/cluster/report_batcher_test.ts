/**
 * The report batcher against a scripted leader: reports queued while a request is out
 * go together in the next one, each answered with its own outcome.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import type { Command } from "../fsm/mod.ts";
import type { ClusterNode } from "./node.ts";
import { MAX_REPORTS_PER_REQUEST, ReportBatcher } from "./report_batcher.ts";

/** A follower whose leader answers /internal/propose as `answer` says, after `delayMs`. */
function follower(answer: (commands: Command[]) => Response, delayMs = 5) {
  const requests: Command[][] = [];
  let applied = 0;
  const node = {
    isLeader: () => false,
    leaderUrl: () => "https://leader",
    leaderId: () => "n1",
    id: "n2",
    fsm: { member: () => ({ name: "n2" }) },
    transport: { blocked: new Set<string>() },
    peerHttp: {
      fetch: async (_url: string, init: RequestInit) => {
        const { commands } = JSON.parse(String(init.body)) as { commands: Command[] };
        requests.push(commands);
        await new Promise((r) => setTimeout(r, delayMs));
        return answer(commands);
      },
    },
    waitApplied: (index: number) => {
      applied = Math.max(applied, index);
      return Promise.resolve();
    },
  } as unknown as ClusterNode;
  return { node, requests, applied: () => applied };
}

const observed = (name: string): Command => ({
  op: "vm.observed",
  name,
  node: "n2",
  state: "stopped",
  at: 1,
});

Deno.test("report batcher: a lone report goes at once; those queued meanwhile share the next request", async () => {
  let index = 100;
  const f = follower((commands) =>
    Response.json({
      results: commands.map((c) => ({
        result: { name: (c as { name: string }).name },
        index: ++index,
      })),
    })
  );
  const batcher = new ReportBatcher(f.node);
  const first = batcher.submit(observed("a"));
  const rest = Array.from({ length: 40 }, (_, i) => batcher.submit(observed(`v${i}`)));
  assertEquals(await first, { name: "a" });
  const results = await Promise.all(rest);
  assertEquals(results.map((r) => (r as { name: string }).name), rest.map((_, i) => `v${i}`));
  assertEquals(f.requests.map((r) => r.length), [1, 40]);
  assertEquals(f.applied(), 141, "read-your-writes waits for the last index of the batch");
});

Deno.test("report batcher: each report gets its own outcome; a refused request fails its reports only", async () => {
  let refuse = false;
  const f = follower((commands) =>
    refuse
      ? Response.json({ error: { code: "forbidden", message: "not yours" } }, { status: 403 })
      : Response.json({
        results: commands.map((c, i) =>
          (c as { name: string }).name === "bad"
            ? { error: { code: "not_found", message: "vm bad not found" } }
            : { result: i, index: i + 1 }
        ),
      })
  );
  const batcher = new ReportBatcher(f.node);
  const ok = batcher.submit(observed("ok"));
  const bad = batcher.submit(observed("bad"));
  assertEquals(await ok, 0);
  await assertRejects(() => bad, /vm bad not found/);
  refuse = true;
  await assertRejects(() => batcher.submit(observed("x")), /not yours/);
  refuse = false;
  assertEquals(await batcher.submit(observed("after")), 0, "the next request goes out as usual");
});

Deno.test("report batcher: a request carries at most MAX_REPORTS_PER_REQUEST reports", async () => {
  const f = follower((commands) =>
    Response.json({ results: commands.map((_, i) => ({ result: null, index: i + 1 })) })
  );
  const batcher = new ReportBatcher(f.node);
  const all = Array.from(
    { length: MAX_REPORTS_PER_REQUEST * 2 + 3 },
    (_, i) => batcher.submit(observed(`v${i}`)),
  );
  await Promise.all(all);
  assert(f.requests.every((r) => r.length <= MAX_REPORTS_PER_REQUEST));
  assertEquals(f.requests.reduce((n, r) => n + r.length, 0), all.length);
});
