import { StateMachine } from "./state_machine.ts";
import { PRUNE_SQL } from "./config.ts";
import { SPAN_SQL } from "./audit.ts";
import { listSql } from "./vms.ts";
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { ApplyFailedError } from "../errors/mod.ts";
import { DatabaseSync } from "node:sqlite";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { Command } from "./commands.ts";
import type { Entry } from "../raft/types.ts";
import { join } from "node:path";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

let idx = 0;
const cmd = (c: Command | Record<string, unknown>, type: Entry["type"] = "normal"): Entry => ({
  index: ++idx,
  term: 1,
  type,
  data: JSON.stringify(c),
});

async function fresh(): Promise<{ fsm: StateMachine; path: string }> {
  idx = 0;
  const path = join(await Deno.makeTempDir(), "state.db");
  const fsm = new StateMachine(path);
  fsm.applyEntries([cmd({
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "n1", url: "http://a" },
    adminTokenHash: "h",
    config: DEFAULT_CONFIG,
    at: 1,
  })]);
  return { fsm, path };
}

testWithTimeout({
  name: "applied index and results are recorded atomically and never re-applied",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, path } = await fresh();
  const e = cmd({ op: "config.patch", changes: { "cluster.name": "x" }, by: "t", at: 2 });
  const r = fsm.applyEntries([e]);
  assertEquals(r.get(e.index), { ok: true, value: { version: 2 } });
  assertEquals(fsm.applyEntries([e]).size, 0, "a replayed entry is skipped");
  fsm.close();
  const again = new StateMachine(path);
  assertEquals(again.appliedIndex(), e.index);
  assertEquals(again.config().version, 2);
  again.close();
});

testWithTimeout({
  name: "a stale ifVersion is a conflict and changes nothing",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const e = cmd({
    op: "config.patch",
    changes: { "cluster.name": "y" },
    ifVersion: 7,
    by: "t",
    at: 2,
  });
  const r = fsm.applyEntries([e]).get(e.index)!;
  assert(!r.ok && r.error.code === "conflict");
  assertEquals(fsm.config().version, 1);
  assertEquals(fsm.config().config["cluster.name"], "novactl");
  assertEquals(fsm.appliedIndex(), e.index, "the rejected entry still counts as applied");
});

testWithTimeout({
  name: "rollback creates a new version equal to the old one",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([
    cmd({ op: "config.patch", changes: { "cluster.maxVoters": 5 }, by: "t", at: 2 }),
  ]);
  fsm.applyEntries([cmd({ op: "config.rollback", version: 1, by: "t", at: 3 })]);
  const cur = fsm.config();
  assertEquals(cur.version, 3);
  assertEquals(cur.config, fsm.configVersion(1).config);
  assertEquals(fsm.configHistory().map((v) => v.version), [3, 2, 1]);
});

testWithTimeout(
  { name: "join tokens are single-use and expire", timeoutMs: 2 * MINUTE },
  async () => {
    const { fsm } = await fresh();
    fsm.applyEntries([
      cmd({ op: "joinToken.create", id: "t1", expiresAt: 100, at: 10, by: "admin" }),
    ]);
    const late = cmd({ op: "joinToken.consume", id: "t1", node: "n2", at: 100 });
    const r1 = fsm.applyEntries([late]).get(late.index)!;
    assert(!r1.ok && /expired/.test(r1.error.message));
    const ok = cmd({ op: "joinToken.consume", id: "t1", node: "n2", at: 50 });
    assert(fsm.applyEntries([ok]).get(ok.index)!.ok);
    const reuse = cmd({ op: "joinToken.consume", id: "t1", node: "n3", at: 51 });
    const r3 = fsm.applyEntries([reuse]).get(reuse.index)!;
    assert(!r3.ok && /already used/.test(r3.error.message));
  },
);

testWithTimeout({
  name: "snapshot restore reproduces the replicated tables",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([
    cmd({ type: "addLearner", node: "n2", context: JSON.stringify({ url: "http://b" }) }, "conf"),
  ]);
  const data = fsm.snapshotData();
  const other = new StateMachine(join(await Deno.makeTempDir(), "s.db"));
  other.restore(data, fsm.appliedIndex());
  assertEquals(other.members(), fsm.members());
  assertEquals(other.confState(), { voters: ["n1"], learners: ["n2"] });
  assertEquals(other.config(), fsm.config());
  assertEquals(other.appliedIndex(), fsm.appliedIndex());
});

testWithTimeout({
  name: "a snapshot file equals the in-memory one and restores the same state",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([
    cmd({ op: "config.patch", changes: { "config.keepVersions": 10_000 }, by: "t", at: 1 }),
  ]);
  for (let i = 0; i < 4500; i++) {
    fsm.applyEntries([
      cmd({ op: "config.patch", changes: { "cluster.description": `v${i}` }, by: "t", at: i }),
    ]);
  }
  const path = join(await Deno.makeTempDir(), "snap");
  const snap = await fsm.snapshotToFile(path);
  assertEquals(snap.index, fsm.appliedIndex());
  assertEquals(await Deno.readTextFile(path), fsm.snapshotData());
  assertEquals(snap.bytes, (await Deno.stat(path)).size);
  assertEquals(snap.conf, fsm.confState());
  const other = new StateMachine(join(await Deno.makeTempDir(), "s.db"));
  other.restoreFromFileSync(path, snap.index);
  assertEquals(other.configHistory(5000).length, 4502);
  assertEquals(other.config().config["cluster.description"], "v4499");
});

testWithTimeout({
  name: "a streamed restore loads rows in batches into a fresh file and swaps it in",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([
    cmd({ op: "config.patch", changes: { "config.keepVersions": 10_000 }, by: "t", at: 1 }),
  ]);
  for (let i = 0; i < 300; i++) {
    fsm.applyEntries([
      cmd({ op: "config.patch", changes: { "cluster.description": `v${i}` }, by: "t", at: i }),
    ]);
  }
  const path = join(await Deno.makeTempDir(), "snap");
  const snap = await fsm.snapshotToFile(path);
  const dir = await Deno.makeTempDir();
  const other = new StateMachine(join(dir, "state.db"));
  other.applyEntries([{ index: 1, term: 1, type: "normal", data: "" }]);
  let batches = 0;
  let ticks = 0;
  const readErrors: string[] = [];
  const ticker = setInterval(() => {
    ticks++;
    // Reads go on during the restore, including around the swap: the database is always open.
    try {
      other.settings();
      other.appliedIndex();
    } catch (err) {
      readErrors.push(String(err));
    }
  }, 0);
  const restoring = other.restoreFromFile(path, snap.index, {
    batchRows: 50,
    onBatch: () => {
      batches++;
      // Until the swap, readers see the old state, never a half-restored one.
      assertEquals(other.appliedIndex(), 1);
    },
  });
  await restoring;
  clearInterval(ticker);
  assert(batches >= 6, `restored in ${batches} batches of 50 rows`);
  assert(ticks > 0, "timers ran while restoring");
  assertEquals(readErrors, []);
  assertEquals(other.appliedIndex(), snap.index);
  assertEquals(other.config().config["cluster.description"], "v299");
  assertEquals(other.configHistory(1000).length, 302);
  const left = [...Deno.readDirSync(dir)].map((f) => f.name).filter((n) => n.includes("restore"));
  assertEquals(left, [], "the scratch file was moved into place");
  other.close();
  const reopened = new StateMachine(join(dir, "state.db"));
  assertEquals(reopened.appliedIndex(), snap.index, "the swapped-in file is the durable state");
  reopened.close();
});

testWithTimeout({
  name: "a snapshot naming an unknown table or column is refused",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const bad = '{"format":2,"clusterId":"c"}\n["meta",{"key":"applied_index","value":"9"}]\n';
  let err = "";
  try {
    fsm.restore(bad, 9);
  } catch (e) {
    err = String(e);
  }
  assert(/unknown table "meta"/.test(err), err);
  assertEquals(fsm.appliedIndex(), 1, "nothing changed");
});

const image = {
  name: "img",
  kind: "kernel",
  kernel: { sha256: "a".repeat(64), size: 1 },
  sources: ["n1"],
};
const vmSpec = {
  name: "v1",
  uuid: "u1",
  image: "img",
  cpus: 1,
  memoryMiB: 256,
  node: "n1",
  ha: false,
  labels: {},
  desired: "running",
  restartPolicy: "never",
  disks: [{ id: "root", volume: "v1-u1-root", sizeBytes: 1 << 30, source: { kind: "blank" } }],
  cloudInit: null,
  template: false,
  generation: 0,
  snapshots: [],
};

testWithTimeout({
  name: "VMs and images survive snapshot restore; reports from another host are ignored",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([
    cmd({ op: "image.create", image, by: "t", at: 2 }),
    cmd({ op: "vm.create", vm: vmSpec, by: "t", at: 3 }),
    cmd({ op: "vm.observed", name: "v1", node: "n1", state: "running", at: 4 }),
    cmd({ op: "vm.observed", name: "v1", node: "n9", state: "failed", reason: "x", at: 5 }),
    cmd({
      op: "vm.snapshot.add",
      name: "v1",
      node: "n1",
      snapshot: { name: "s1", memory: true, createdAt: "t", vmState: "running" },
      at: 6,
    }),
  ]);
  const vm = fsm.vm("v1")!;
  assertEquals([vm.state, vm.reason, vm.snapshots.length], ["running", null, 1]);

  const other = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  other.restore(fsm.snapshotData(), fsm.appliedIndex());
  assertEquals(other.vm("v1"), fsm.vm("v1"));
  assertEquals(other.image("img")?.kind, "kernel");
  fsm.close();
  other.close();
});

testWithTimeout({
  name: "a VM's display is what its host last reported (kept when unsaid), and survives restore",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const observed = (display: "vga" | "none" | null | undefined, at: number) =>
    cmd({
      op: "vm.observed",
      name: "v1",
      node: "n1",
      state: display ? "running" : "stopped",
      ...(display !== undefined ? { display } : {}),
      at,
    });
  fsm.applyEntries([
    cmd({ op: "image.create", image, by: "t", at: 2 }),
    cmd({ op: "vm.create", vm: vmSpec, by: "t", at: 3 }),
  ]);
  assertEquals(fsm.vm("v1")!.display, undefined, "never reported");
  fsm.applyEntries([observed("vga", 4)]);
  assertEquals(fsm.vm("v1")!.display, "vga");
  fsm.applyEntries([
    cmd({
      op: "vm.snapshot.add",
      name: "v1",
      node: "n1",
      snapshot: { name: "s1", memory: true, createdAt: "t", vmState: "running", display: "vga" },
      at: 5,
    }),
  ]);
  assertEquals(fsm.vm("v1")!.display, "vga", "a spec write keeps it");
  assertEquals(fsm.vm("v1")!.snapshots[0].display, "vga");
  fsm.applyEntries([
    cmd({ op: "vm.observed", name: "v1", node: "n9", state: "running", display: "none", at: 6 }),
  ]);
  assertEquals(fsm.vm("v1")!.display, "vga", "another host's report is ignored");
  fsm.applyEntries([{ ...observed(undefined, 7) }]);
  assertEquals(fsm.vm("v1")!.display, "vga", "unsaid: unchanged");
  fsm.applyEntries([observed(null, 8)]);
  assertEquals(fsm.vm("v1")!.display, null, "no QEMU runs");
  fsm.applyEntries([observed("none", 9)]);
  const other = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  other.restore(fsm.snapshotData(), fsm.appliedIndex());
  assertEquals(other.vm("v1")!.display, "none");
  fsm.close();
  other.close();
});

testWithTimeout({
  name:
    "vm.desired deleted is refused for nothing, a template never runs, listeners hear VM changes",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const heard: (string | null)[] = [];
  fsm.onVmChange((n) => heard.push(n));
  fsm.applyEntries([
    cmd({ op: "image.create", image, by: "t", at: 2 }),
    cmd({ op: "vm.create", vm: { ...vmSpec, desired: "stopped" }, by: "t", at: 3 }),
    cmd({ op: "vm.update", name: "v1", changes: { template: true }, by: "t", at: 4 }),
  ]);
  const start = cmd({ op: "vm.desired", name: "v1", desired: "running", by: "t", at: 5 });
  const r = fsm.applyEntries([start]).get(start.index)!;
  assert(!r.ok && r.error.code === "conflict", "templates never run");
  assertEquals(fsm.vm("v1")!.desired, "stopped");
  assertEquals(heard, ["v1"], "one notification per batch and VM; rejected commands are silent");
  const del = cmd({ op: "image.delete", name: "img", at: 6 });
  const d = fsm.applyEntries([del]).get(del.index)!;
  assert(!d.ok && d.error.code === "conflict", "an image in use cannot be deleted");
  fsm.close();
});

testWithTimeout({
  name: "an environmental failure while applying throws and leaves the applied index where it was",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, path } = await fresh();
  const before = fsm.appliedIndex();
  // Another connection breaks the database under the state machine: not something
  // the command did, so no replica-specific "result" may be recorded for it.
  const vandal = new DatabaseSync(path);
  vandal.exec("DROP TABLE groups");
  vandal.close();
  const ok = cmd({ op: "config.patch", changes: { "cluster.name": "z" }, by: "t", at: 2 });
  const doomed = cmd({
    op: "group.create",
    group: { name: "g", policy: "spread", strict: true },
    at: 3,
  });
  const err = assertThrows(() => fsm.applyEntries([ok, doomed]), ApplyFailedError);
  assert(err.message.includes(`entry ${doomed.index}`), err.message);
  assertEquals(fsm.appliedIndex(), before, "the applied index did not advance");
  assertEquals(fsm.config().config["cluster.name"], "novactl", "the whole batch rolled back");
  fsm.close();
  const reopened = new StateMachine(path);
  assertEquals(reopened.appliedIndex(), before, "nothing of the batch was committed");
  reopened.close();
});

testWithTimeout({
  name: "a violated constraint is a deterministic rejection, not a failure of the node",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const first = cmd({ op: "joinToken.create", id: "t1", expiresAt: 100, at: 10, by: "admin" });
  const dup = cmd({ op: "joinToken.create", id: "t1", expiresAt: 100, at: 11, by: "admin" });
  const r = fsm.applyEntries([first, dup]);
  assert(r.get(first.index)!.ok);
  const rd = r.get(dup.index)!;
  assert(!rd.ok && rd.error.code === "conflict", JSON.stringify(rd));
  assertEquals(fsm.appliedIndex(), dup.index);
  fsm.close();
});

testWithTimeout({
  name: "a malformed command is rejected the same on every replica, never a node failure",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  // A command missing the fields its applier reads throws a TypeError, which
  // would stop every replica at once if it were treated as this node's failure.
  const bad = cmd({ op: "group.create", at: 3 });
  const garbage: Entry = { index: ++idx, term: 1, type: "normal", data: "{not json" };
  const r = fsm.applyEntries([bad, garbage]);
  for (const e of [bad, garbage]) {
    const res = r.get(e.index)!;
    assert(!res.ok && res.error.code === "validation", JSON.stringify(res));
  }
  assertEquals(fsm.appliedIndex(), garbage.index);
  fsm.close();
});

// ---- retention ------------------------------------------------------------------

const DAY = 86_400_000;

/** Applies the same entries to two fresh state machines: pruning must leave them identical. */
async function twoReplicas(entries: Entry[]): Promise<[StateMachine, StateMachine]> {
  const a = (await fresh()).fsm;
  const b = (await fresh()).fsm;
  for (const e of entries) {
    a.applyEntries([e]);
    b.applyEntries([e]);
  }
  return [a, b];
}

testWithTimeout({
  name: "retention: config versions beyond config.keepVersions are pruned on every replica alike",
  timeoutMs: 2 * MINUTE,
}, async () => {
  idx = 1; // after cluster.init
  const entries = [
    cmd({ op: "config.patch", changes: { "config.keepVersions": 5 }, by: "t", at: 2 }),
  ];
  for (let i = 0; i < 10; i++) {
    entries.push(
      cmd({ op: "config.patch", changes: { "cluster.description": `d${i}` }, by: "t", at: 3 + i }),
    );
  }
  const [a, b] = await twoReplicas(entries);
  assertEquals(a.configHistory().map((v) => v.version), [12, 11, 10, 9, 8]);
  assertEquals(a.snapshotData(), b.snapshotData(), "replicas prune the same rows");
  assertEquals(a.configRetention(), { keepVersions: 5, keepDays: 0, oldest: 8, newest: 12 });

  const rollback = { ...cmd({ op: "config.rollback", version: 3, by: "t", at: 20 }), index: 99 };
  const r = a.applyEntries([rollback]).get(99)!;
  assert(!r.ok, "rollback to a pruned version is refused");
  assertEquals(r.error.code, "not_found");
  assertEquals(
    r.error.message,
    "configuration version 3 was pruned: config.keepVersions=5 keeps versions 8–12",
  );
  assertEquals(a.config().version, 12, "nothing was written");
  const ok = { ...cmd({ op: "config.rollback", version: 9, by: "t", at: 21 }), index: 100 };
  assert(a.applyEntries([ok]).get(100)!.ok, "a kept version rolls back");
  assertEquals(a.config().config["cluster.description"], "d6");
  assertEquals(a.configHistory().map((v) => v.version), [13, 12, 11, 10, 9]);
});

testWithTimeout({
  name: "retention: config.keepDays prunes by the entry's timestamp, never the current version",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([
    cmd({ op: "config.patch", changes: { "config.keepDays": 2 }, by: "t", at: 10 * DAY }),
    cmd({ op: "config.patch", changes: { "cluster.description": "x" }, by: "t", at: 11 * DAY }),
  ]);
  assertEquals(fsm.configHistory().map((v) => v.version), [3, 2], "version 1 (day 0) is pruned");
  fsm.applyEntries([
    cmd({ op: "config.patch", changes: { "cluster.description": "y" }, by: "t", at: 30 * DAY }),
  ]);
  assertEquals(fsm.configHistory().map((v) => v.version), [4], "only the current one is left");
  const e = { ...cmd({ op: "config.rollback", version: 2, by: "t", at: 31 * DAY }), index: 50 };
  const r = fsm.applyEntries([e]).get(50)!;
  assert(
    !r.ok && /version 2 was pruned: .*config\.keepDays=2 keep versions 4–4/.test(r.error.message),
  );
});

const op = (id: string, at: number) =>
  cmd({
    op: "operation.create",
    operation: { id, kind: "migrate", target: "v", runner: "n1", params: {}, by: "t" },
    at,
  });
const finish = (id: string, at: number) =>
  cmd({ op: "operation.update", id, state: "succeeded", at });

testWithTimeout({
  name: "retention: finished operations beyond operations.keepCount go; running ones stay",
  timeoutMs: 2 * MINUTE,
}, async () => {
  idx = 1;
  const entries = [
    cmd({ op: "config.patch", changes: { "operations.keepCount": 2 }, by: "t", at: 2 }),
    op("running-1", 3),
  ];
  for (let i = 0; i < 5; i++) entries.push(op(`op-${i}`, 10 + i), finish(`op-${i}`, 20 + i));
  entries.push(op("op-last", 30));
  const [a, b] = await twoReplicas(entries);
  assertEquals(
    a.operations().map((o) => o.id).sort(),
    ["op-3", "op-4", "op-last", "running-1"],
  );
  assertEquals(a.snapshotData(), b.snapshotData());
});

testWithTimeout({
  name: "retention: finished operations older than operations.keepDays go",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([op("old", DAY), finish("old", DAY), op("stuck", DAY)]);
  fsm.applyEntries([op("new", 40 * DAY)]);
  assertEquals(fsm.operations().map((o) => o.id).sort(), ["new", "stuck"]);
});

testWithTimeout({
  name: "retention: used and expired join tokens are purged joinTokens.keepDays later",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  fsm.applyEntries([
    cmd({ op: "joinToken.create", id: "expired", expiresAt: DAY, at: 0, by: "a" }),
    cmd({ op: "joinToken.create", id: "used", expiresAt: 100 * DAY, at: 0, by: "a" }),
    cmd({ op: "joinToken.consume", id: "used", node: "n2", at: 2 * DAY }),
    cmd({ op: "joinToken.create", id: "open", expiresAt: 100 * DAY, at: 3 * DAY, by: "a" }),
  ]);
  assertEquals(fsm.joinTokens().map((t) => t.id), ["expired", "used", "open"], "kept 7 days");
  fsm.applyEntries([
    cmd({ op: "joinToken.create", id: "later", expiresAt: 100 * DAY, at: 8.5 * DAY, by: "a" }),
  ]);
  assertEquals(fsm.joinTokens().map((t) => t.id), ["used", "open", "later"]);
  fsm.applyEntries([
    cmd({ op: "joinToken.create", id: "much", expiresAt: 100 * DAY, at: 9.5 * DAY, by: "a" }),
  ]);
  assertEquals(fsm.joinTokens().map((t) => t.id), ["open", "later", "much"]);
});

testWithTimeout({
  name: "appliers name what they changed; a rejected config write leaves the current version",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const heard: string[] = [];
  fsm.onChange((c) => heard.push(c ? `${c.resource}:${c.name ?? ""}` : "all"));
  const patch = cmd({ op: "config.patch", changes: { "cluster.name": "a" }, by: "t", at: 2 });
  fsm.applyEntries([
    patch,
    cmd({ op: "image.create", image, by: "t", at: 3 }),
    cmd({ op: "node.state", name: "nope", state: "cordoned", at: 4 }),
  ]);
  assertEquals(heard, ["config:", "image:img"], "rejected commands are silent");
  const stale = cmd({
    op: "config.rollback",
    version: 1,
    ifVersion: 1,
    by: "t",
    at: 5,
  });
  const r = fsm.applyEntries([stale]).get(stale.index)!;
  assert(!r.ok && r.error.code === "conflict");
  assertEquals(fsm.config().version, 2);
  assertEquals(fsm.settings()["cluster.name"], "a");
  fsm.close();
});

Deno.test("retention: what runs on every write reads only the rows it removes, never the whole table", async () => {
  const { fsm } = await fresh();
  const plan = (sql: string) =>
    (fsm.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...sql.split("?").slice(1).map(() => 0)) as {
      detail: string;
    }[]).map((r) => r.detail).join("; ");
  // Bounded from below by what is kept, or on the created_at index: only old rows are visited.
  // (The single statement they replace, `version < current AND (version <= ? OR created_at < ?)`,
  // visited every kept version on every write: 8.8 % of a follower's CPU at 1,000 versions.)
  assertEquals(
    plan(PRUNE_SQL.byCount),
    "SEARCH config_versions USING INTEGER PRIMARY KEY (rowid<?)",
  );
  assert(/USING INDEX config_versions_created_at \(created_at<\?\)/.test(plan(PRUNE_SQL.byAge)));
  // Each aggregate on its own reads one end of the index; MIN and MAX in one SELECT scan the
  // table (7.3 ms per append at 200,000 records, against 0.001 ms), as this check shows.
  assert(!/SCAN audit/.test(plan(SPAN_SQL)), plan(SPAN_SQL));
  assert(/SCAN audit/.test(plan("SELECT MIN(id) AS lo, MAX(id) AS hi FROM audit")));
  fsm.close();
});

Deno.test("vm lists the leader runs on a timer are index searches: a host's VMs, the HA VMs", async () => {
  const { fsm } = await fresh();
  const plan = (q: Parameters<typeof listSql>[0]) => {
    const { sql, args } = listSql(q);
    return (fsm.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...args) as { detail: string }[])
      .map((r) => r.detail).join("; ");
  };
  assertEquals(plan({ ha: true }), "SCAN vms USING INDEX vms_ha");
  assert(/USING INDEX vms_node/.test(plan({ node: "n1" })), plan({ node: "n1" }));
  fsm.db.exec("DROP INDEX vms_ha"); // the check catches a missing index
  assertEquals(plan({ ha: true }), "SCAN vms USING INDEX sqlite_autoindex_vms_1"); // every row
  fsm.close();
});

Deno.test("removed members are remembered until they join again (their OVN chassis go)", async () => {
  const { fsm } = await fresh();
  const conf = (type: string, node: string) =>
    cmd({ type, node, context: JSON.stringify({ url: "http://b", at: 2 }) }, "conf");
  fsm.applyEntries([conf("addLearner", "n2"), conf("addLearner", "n3")]);
  assertEquals(fsm.removedMembers(), []);
  fsm.applyEntries([conf("remove", "n2")]);
  assertEquals(fsm.removedMembers(), ["n2"]);
  assertEquals(fsm.members().map((m) => m.name), ["n1", "n3"]);
  fsm.applyEntries([conf("addLearner", "n2")]);
  assertEquals(fsm.removedMembers(), [], "a name that joined again is a member, not removed");
  fsm.close();
});
