/**
 * The event stream across real nodes (simulated hosts: Raft, API, leases and VM
 * reports are real, QEMU is not): a client follows a follower's stream while a
 * VM is created and runs, goes away, misses more changes, and resumes on
 * another node with Last-Event-ID — getting exactly what it missed, no
 * duplicates. The CLI resumes the same way. Every node holds the same events.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { requestJson, waitFor } from "../bench/lib/util.ts";
import { clusterFetch } from "../bench/lib/tls.ts";
import { importTinyKernel, simulatedHostArgs } from "../bench/lib/simulated.ts";
import { readSse, type SseMessage } from "../core/events/sse.ts";
import type { ClusterEvent } from "../core/events/mod.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** Orders event ids (`<raftIndex>-<n>`). */
function cmpId(a: string, b: string): number {
  const [ai, an] = a.split("-").map(Number);
  const [bi, bn] = b.split("-").map(Number);
  return ai - bi || an - bn;
}

testWithTimeout({
  name:
    "events: a stream on a follower resumes on another node with Last-Event-ID, no loss, no repeat",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cluster = new NovactlCluster({
    extraNodeArgs: simulatedHostArgs(64, 65_536),
    // No keepalive within the test: a stream must end because its client left, not because
    // a keepalive failed to reach it.
    env: { NOVACTL_EVENTS_HEARTBEAT_MS: "600000" },
  });
  await cluster.start(3);
  const token = cluster.adminToken;
  try {
    await importTinyKernel(cluster, "k");
    const leader = await cluster.leaderName();
    const [follower, other] = cluster.nodes.filter((n) => n.name !== leader);
    const call = async (method: string, path: string, body?: unknown) => {
      const r = await requestJson(`${await cluster.leaderUrl()}${path}`, {
        method,
        body,
        token,
        timeoutMs: 30_000,
      });
      assert(
        r.status >= 200 && r.status < 300,
        `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`,
      );
      return r.body;
    };
    const vmState = async (name: string) => {
      const r = await requestJson<{ state: string }>(
        `${await cluster.leaderUrl()}/api/v1/vms/${name}`,
        {
          token,
        },
      );
      return r.status === 404 ? "gone" : r.body?.state;
    };
    const open = async (url: string, headers: Record<string, string> = {}) => {
      const res = await clusterFetch(`${url}/api/v1/events?type=vm`, {
        headers: { authorization: `Bearer ${token}`, ...headers },
      });
      assertEquals(res.status, 200);
      return { res, messages: readSse(res.body!) };
    };
    /** Reads events off `messages` until `done` says so (heartbeats skipped). */
    const readUntil = async (
      messages: AsyncGenerator<SseMessage>,
      into: ClusterEvent[],
      done: (list: ClusterEvent[]) => boolean,
    ) => {
      // A bound on waiting, not a timing check: a stream that lost what the test waits for
      // fails here, naming what it got, instead of at the test's timeout.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stuck = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no awaited event within 60 s; got ${JSON.stringify(into)}`)),
          60_000,
        );
      });
      try {
        while (!done(into)) {
          const { value, done: ended } = await Promise.race([messages.next(), stuck]);
          assert(!ended, `stream ended early after ${JSON.stringify(into.map((e) => e.id))}`);
          assert(value.event !== "gap", `unexpected gap: ${value.data}`);
          if (value.id !== undefined) into.push(JSON.parse(value.data));
        }
      } finally {
        clearTimeout(timer);
      }
    };
    /** Is there an event of `action` on `resource` (with `details[key] === value`)? */
    const has =
      (action: string, resource: string, key = "state", value?: string) => (list: ClusterEvent[]) =>
        list.some((e) =>
          e.action === action && e.resource === resource &&
          (value === undefined || e.details[key] === value)
        );

    // 1. Follow the stream on a follower while ev1 is created and starts.
    const first = await open(follower.url);
    const seen: ClusterEvent[] = [];
    await call("POST", "/api/v1/vms", { name: "ev1", image: "k", cpus: 1, memoryMiB: 64 });
    await readUntil(first.messages, seen, has("vm.state", "ev1", "state", "running"));
    assertEquals(seen[0].action, "vm.created", "the create comes first");
    assertEquals(seen[0].resource, "ev1");
    const ids = seen.map((e) => e.id);
    assertEquals(ids, [...ids].sort(cmpId), "in order");
    assertEquals(new Set(ids).size, ids.length, "each once");
    // 2. The client goes away.
    await first.messages.return(undefined);
    const lastSeen = seen.at(-1)!.id;
    // ... and the follower lets go of its stream (no listener left behind).
    await waitFor(async () => {
      const text = await (await clusterFetch(`${follower.url}/metrics`)).text();
      return /^novactl_event_streams 0$/m.test(text) || undefined;
    }, { timeoutMs: 30_000, description: "the follower's event stream closed" });

    // 3. Changes it misses: ev1 stopped and deleted, ev2 created and running.
    await call("POST", "/api/v1/vms/ev1/stop");
    await waitFor(async () => (await vmState("ev1")) === "stopped" || undefined, {
      timeoutMs: 60_000,
      description: "ev1 stopped",
    });
    await call("DELETE", "/api/v1/vms/ev1");
    await call("POST", "/api/v1/vms", { name: "ev2", image: "k", cpus: 1, memoryMiB: 64 });
    await waitFor(
      async () =>
        ((await vmState("ev1")) === "gone" && (await vmState("ev2")) === "running") || undefined,
      { timeoutMs: 60_000, description: "ev1 gone, ev2 running" },
    );

    // 4. What happened, as the leader tells it (every node holds the same events).
    const reference = await waitFor(async () => {
      const res = await clusterFetch(
        `${await cluster.leaderUrl()}/api/v1/events?type=vm&follow=false&tail=1000`,
        {
          headers: { authorization: `Bearer ${token}` },
        },
      );
      const list: ClusterEvent[] = [];
      for await (const m of readSse(res.body!)) {
        if (m.id !== undefined) list.push(JSON.parse(m.data));
      }
      return has("vm.state", "ev2", "state", "running")(list) ? list : undefined;
    }, { timeoutMs: 30_000, description: "the leader's events" });
    const at = reference.findIndex((e) => e.id === lastSeen);
    assert(at >= 0, `${lastSeen} is among the leader's events`);
    assertEquals(
      reference.slice(0, at + 1).filter((e) => cmpId(e.id, seen[0].id) >= 0).map((e) =>
        JSON.stringify(e)
      ),
      seen.map((e) => JSON.stringify(e)),
      "the follower streamed what the leader holds, byte for byte",
    );
    const missed = reference.slice(at + 1);
    // The changes it missed, in the order they happened.
    const steps = [
      has("vm.desired", "ev1", "desired", "stopped"),
      has("vm.state", "ev1", "state", "stopped"),
      has("vm.desired", "ev1", "desired", "deleted"),
      has("vm.deleted", "ev1"),
      has("vm.created", "ev2"),
      has("vm.state", "ev2", "state", "running"),
    ];
    let pos = -1;
    for (const [i, step] of steps.entries()) {
      const found = missed.findIndex((e, j) => j > pos && step([e]));
      assert(found > pos, `missed change #${i}, in order, in ${JSON.stringify(missed)}`);
      pos = found;
    }

    // 5. Resume on another node with Last-Event-ID: exactly the missed events.
    const again = await open(other.url, { "last-event-id": lastSeen });
    const resumed: ClusterEvent[] = [];
    // A change after the resume marks where the missed events must have ended (a resume that
    // started anywhere else shows up here, rather than as a stream waiting forever).
    await call("POST", "/api/v1/vms", {
      name: "ev3",
      image: "k",
      cpus: 1,
      memoryMiB: 64,
      start: false,
    });
    await readUntil(again.messages, resumed, has("vm.created", "ev3"));
    await again.messages.return(undefined);
    const beforeMarker = resumed.slice(0, resumed.findIndex((e) => e.resource === "ev3"));
    assertEquals(beforeMarker.map((e) => e.id), missed.map((e) => e.id), "no loss, no repeat");
    assertEquals(
      beforeMarker.map((e) => JSON.stringify(e)),
      missed.map((e) => JSON.stringify(e)),
    );

    // 6. The CLI, on the follower this time, resumes the same way.
    const out = await cluster.cli([
      "events",
      "--since",
      lastSeen,
      "--type",
      "vm",
      "-o",
      "json",
      "--server",
      follower.url,
      "--token",
      token,
    ]);
    const cli = JSON.parse(out) as { events: ClusterEvent[]; gaps?: unknown };
    assertEquals(cli.gaps, undefined);
    assertEquals(
      cli.events.filter((e) => e.resource !== "ev3").map((e) => e.id),
      missed.map((e) => e.id),
    );
  } finally {
    await cluster.stop();
  }
});
