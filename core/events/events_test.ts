/**
 * The event log over a real state machine: which entries make which events,
 * their ids, the same events on every replica (and after a snapshot), the
 * retention window and the reader's resume, filter, gap and clean exit.
 */
import { join } from "node:path";
import { StateMachine } from "../fsm/state_machine.ts";
import type { Command } from "../fsm/commands.ts";
import type { Entry } from "../raft/types.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { testVmSpec } from "../testing/fixtures.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { type ClusterEvent, eventStream, parseEventId, type StreamItem } from "./mod.ts";
import type { AuditInput } from "../fsm/audit.ts";

const T0 = Date.UTC(2026, 0, 1);

/** A state machine with its own entry counter, initialised with `config` changes. */
async function machine(config: Record<string, unknown> = {}) {
  let idx = 0;
  const fsm = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  const entries: Entry[] = [];
  const apply = (c: Command | Record<string, unknown>, type: Entry["type"] = "normal") => {
    const e: Entry = { index: ++idx, term: 1, type, data: JSON.stringify(c) };
    entries.push(e);
    return fsm.applyEntries([e]).get(e.index)!;
  };
  apply({
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "n1", url: "http://a" },
    adminTokenHash: "h",
    config: { ...DEFAULT_CONFIG, ...config },
    at: T0,
  });
  return { fsm, apply, entries, index: () => idx };
}

const inventory = {
  cpus: 4,
  memoryMiB: 4096,
  diskGiB: 10,
  diskFreeGiB: 10,
  accel: "tcg",
  arch: "x86_64",
  kernel: "k",
  hostname: "h",
  version: "v",
};

function rec(over: Partial<AuditInput> = {}): AuditInput {
  return {
    at: T0,
    principal: "alice",
    role: "operator",
    source: "10.0.0.7",
    node: "n1",
    requestId: "r1",
    method: "POST",
    route: "/api/v1/vms",
    path: "/api/v1/vms",
    resource: "vm/web1",
    code: 201,
    ms: 12,
    detail: null,
    ...over,
  };
}

/** Drives one VM's life and an operation, with repeats that must make no event. */
function lifeOf(apply: Awaited<ReturnType<typeof machine>>["apply"]) {
  apply({ op: "node.upsert", name: "n1", url: "http://a", inventory, labels: {}, at: T0 + 1 });
  apply({ op: "node.upsert", name: "n1", url: "http://a", inventory, labels: {}, at: T0 + 2 });
  apply({
    op: "image.create",
    image: {
      name: "img",
      kind: "kernel",
      kernel: { sha256: "0".repeat(64), size: 1 },
      sources: [],
    },
    by: "t",
    at: T0 + 3,
  });
  apply({
    op: "vm.create",
    vm: testVmSpec("web1", "n1", { desired: "running" }),
    by: "alice",
    at: T0 + 4,
  });
  for (const state of ["starting", "running", "running"]) {
    apply({ op: "vm.observed", name: "web1", node: "n1", state, at: T0 + 5 });
  }
  apply({ op: "vm.observed", name: "web1", node: "n2", state: "failed", at: T0 + 5 }); // not its host
  apply({
    op: "operation.create",
    operation: {
      id: "op1",
      kind: "migrate",
      target: "web1",
      runner: "n1",
      params: {},
      by: "alice",
    },
    at: T0 + 6,
  });
  apply({ op: "operation.update", id: "op1", progress: { percent: 50 }, at: T0 + 7 });
  apply({ op: "operation.update", id: "op1", state: "succeeded", at: T0 + 8 });
  apply({ op: "operation.update", id: "op1", progress: { percent: 99 }, at: T0 + 9 }); // finished
  apply({ op: "node.state", name: "n1", state: "cordoned", at: T0 + 10 });
  apply({ op: "node.state", name: "n1", state: "cordoned", at: T0 + 10 });
  apply({
    op: "audit.append",
    records: [
      rec(),
      rec({ principal: "system:ha", method: "SYSTEM", route: "ha.restart", code: null }),
      rec({
        principal: "system:fencing",
        method: "SYSTEM",
        route: "fencing.giveUpLease",
        resource: "node/n1",
      }),
    ],
    at: T0 + 11,
  });
  apply({ op: "vm.create", vm: testVmSpec("web1", "n1"), by: "alice", at: T0 + 12 }); // refused
  apply({ op: "vm.desired", name: "web1", desired: "deleted", by: "alice", at: T0 + 13 });
  apply({ op: "vm.remove", name: "web1", node: "n1", at: T0 + 14 });
}

/** Every item until the reader ends (not following) or `n` items came. */
async function collect(items: AsyncGenerator<StreamItem>, n = Infinity): Promise<StreamItem[]> {
  const out: StreamItem[] = [];
  for await (const it of items) {
    out.push(it);
    if (out.length >= n) break;
  }
  return out;
}

const ids = (items: StreamItem[]) =>
  items.map((i) => "event" in i ? i.event.id : "gap" in i ? "gap" : "heartbeat");

const source = (fsm: StateMachine) => ({
  reads: fsm.events,
  onEvents: (l: () => void) => fsm.onEvents(l),
});

testWithTimeout({
  name: "events: what an entry makes, numbered <raftIndex>-<n>; repeats and refusals make none",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine();
  lifeOf(apply);
  const all = fsm.events.tail({}, 100);
  assertEquals(
    all.map((e) => [e.id, e.type, e.action, e.resource]),
    [
      ["2-0", "node", "node.joined", "n1"],
      ["5-0", "vm", "vm.created", "web1"],
      ["6-0", "vm", "vm.state", "web1"],
      ["7-0", "vm", "vm.state", "web1"],
      ["10-0", "operation", "operation.created", "op1"],
      ["11-0", "operation", "operation.progress", "op1"],
      ["12-0", "operation", "operation.finished", "op1"],
      ["14-0", "node", "node.state", "n1"],
      ["16-0", "audit", "request", "web1"],
      ["16-1", "ha", "ha.restart", "web1"],
      ["16-2", "node", "node.fenced", "n1"],
      ["18-0", "vm", "vm.desired", "web1"],
      ["19-0", "vm", "vm.deleted", "web1"],
    ],
  );
  const byId = new Map(all.map((e) => [e.id, e]));
  assertEquals(byId.get("7-0")!.details, {
    state: "running",
    from: "starting",
    node: "n1",
    reason: null,
  });
  assertEquals(byId.get("11-0")!.details.progress, { percent: 50 });
  assertEquals(byId.get("12-0")!.details.state, "succeeded");
  assertEquals(byId.get("12-0")!.target, "web1");
  assertEquals(byId.get("14-0")!.details, { state: "cordoned", from: "ready" });
  assertEquals(byId.get("5-0")!.at, new Date(T0 + 4).toISOString());
  fsm.close();
});

testWithTimeout({
  name: "events: every replica, and a replica restored from a snapshot, holds the same events",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const a = await machine();
  const b = await machine();
  lifeOf(a.apply);
  lifeOf(b.apply);
  const strip = (list: ClusterEvent[]) => list.map((e) => JSON.stringify(e));
  assertEquals(strip(b.fsm.events.tail({}, 100)), strip(a.fsm.events.tail({}, 100)));
  const c = await machine();
  c.fsm.restore(a.fsm.snapshotData(), a.index());
  assertEquals(strip(c.fsm.events.tail({}, 100)), strip(a.fsm.events.tail({}, 100)));
  // A membership change is a node event too.
  a.apply(
    { type: "addLearner", node: "n2", context: JSON.stringify({ url: "http://b", at: T0 }) },
    "conf",
  );
  assertEquals(
    a.fsm.events.tail({}, 1).map((e) => [e.action, e.resource, e.details.role]),
    [["node.member", "n2", "learner"]],
  );
  for (const m of [a, b, c]) m.fsm.close();
});

testWithTimeout({
  name: "events: a reader filters by type and resource, resumes after an id without loss or repeat",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine();
  lifeOf(apply);
  const signal = new AbortController().signal;
  const read = (opts: Parameters<typeof eventStream>[1]) => collect(eventStream(source(fsm), opts));
  assertEquals(ids(await read({ follow: false, tail: 3, signal })), ["16-2", "18-0", "19-0"]);
  assertEquals(ids(await read({ follow: false, signal })), [], "no tail: only what comes next");
  assertEquals(
    ids(await read({ follow: false, tail: 100, filter: { types: ["operation"] }, signal })),
    ["10-0", "11-0", "12-0"],
  );
  assertEquals(
    ids(await read({ follow: false, tail: 100, filter: { types: ["node", "ha"] }, signal })),
    ["2-0", "14-0", "16-1", "16-2"],
  );
  // By name, by kind/name, and an operation by the VM it acts on.
  const onWeb1 = ids(
    await read({ follow: false, tail: 100, filter: { resource: "web1" }, signal }),
  );
  assertEquals(onWeb1, [
    "5-0",
    "6-0",
    "7-0",
    "10-0",
    "11-0",
    "12-0",
    "16-0",
    "16-1",
    "18-0",
    "19-0",
  ]);
  assertEquals(
    ids(await read({ follow: false, tail: 100, filter: { resource: "node/n1" }, signal })),
    ["2-0", "14-0", "16-2"],
  );
  // Resume: exactly what came after the id, whatever the filter skipped in between.
  assertEquals(ids(await read({ follow: false, since: parseEventId("12-0"), signal })), [
    "14-0",
    "16-0",
    "16-1",
    "16-2",
    "18-0",
    "19-0",
  ]);
  assertEquals(ids(await read({ follow: false, since: parseEventId("16-0"), signal })), [
    "16-1",
    "16-2",
    "18-0",
    "19-0",
  ]);
  assertEquals(
    ids(await read({ follow: false, since: parseEventId("19-0"), signal })),
    [],
    "a reader at the newest id gets nothing again",
  );
  assertEquals(
    ids(await read({ follow: false, since: parseEventId("900-0"), signal })),
    [],
    "an id this replica has not reached: nothing yet, and no gap",
  );
  fsm.close();
});

testWithTimeout({
  name: "events: beyond events.keepCount, a resume from a dropped id is told of the gap",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine({ "events.keepCount": 10 });
  for (let i = 0; i < 30; i++) {
    apply({ op: "node.upsert", name: `h${i}`, url: "http://x", inventory, labels: {}, at: T0 + i });
  }
  // Entries 2..31 made one event each; 10 are kept, and the one before them marks the window.
  assertEquals(fsm.events.count(), 11);
  const w = fsm.events.window()!;
  assertEquals(w.oldest, { index: 21, n: 0 });
  assertEquals(w.newest, { index: 31, n: 0 });
  const signal = new AbortController().signal;
  const read = (since: string) =>
    collect(eventStream(source(fsm), { follow: false, since: parseEventId(since), signal }));
  const lossless = await read("21-0");
  assertEquals(ids(lossless), [
    "22-0",
    "23-0",
    "24-0",
    "25-0",
    "26-0",
    "27-0",
    "28-0",
    "29-0",
    "30-0",
    "31-0",
  ]);
  const lost = await read("20-0");
  assertEquals(ids(lost)[0], "gap");
  assertEquals(ids(lost).slice(1), ["21-0", ...ids(lossless)], "then all that is kept, in order");
  const gap = lost[0] as { gap: { after: string; oldest: string } };
  assertEquals([gap.gap.after, gap.gap.oldest], ["20-0", "21-0"]);
  fsm.close();
});

testWithTimeout({
  name:
    "events: a follower gets new events as they apply, heartbeats when idle, and leaves no listener",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine();
  lifeOf(apply);
  const ac = new AbortController();
  const items = eventStream(source(fsm), {
    follow: true,
    since: parseEventId("18-0"),
    filter: { types: ["vm", "node"] },
    signal: ac.signal,
    heartbeatMs: 20,
  });
  const got: StreamItem[] = [];
  const done = (async () => {
    for await (const it of items) got.push(it);
  })();
  const until = async (pred: () => boolean) => {
    for (let i = 0; i < 500 && !pred(); i++) await new Promise((r) => setTimeout(r, 5));
    assert(pred(), JSON.stringify(got));
  };
  await until(() => ids(got).includes("19-0"));
  assertEquals(fsm.eventListenerCount(), 1);
  apply({ op: "node.state", name: "n1", state: "ready", at: T0 + 20 }); // 20-0
  apply({ op: "audit.append", records: [rec()], at: T0 + 21 }); // 21-0: filtered out
  apply({ op: "node.upsert", name: "n2", url: "http://b", inventory, labels: {}, at: T0 + 22 });
  await until(() => ids(got).includes("22-0"));
  await until(() => ids(got).includes("heartbeat"));
  ac.abort();
  await done;
  assertEquals(ids(got).filter((i) => i !== "heartbeat"), ["19-0", "20-0", "22-0"]);
  assertEquals(fsm.eventListenerCount(), 0, "the reader's listener is gone with it");
  fsm.close();
});
