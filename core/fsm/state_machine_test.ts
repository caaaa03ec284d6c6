import { StateMachine } from "./state_machine.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { Command } from "./commands.ts";
import type { Entry } from "../raft/types.ts";
import { join } from "node:path";

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

Deno.test("applied index and results are recorded atomically and never re-applied", async () => {
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

Deno.test("a stale ifVersion is a conflict and changes nothing", async () => {
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

Deno.test("rollback creates a new version equal to the old one", async () => {
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

Deno.test("join tokens are single-use and expire", async () => {
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
});

Deno.test("snapshot restore reproduces the replicated tables", async () => {
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

Deno.test("a background snapshot equals the synchronous one and restores the same state", async () => {
  const { fsm } = await fresh();
  for (let i = 0; i < 4500; i++) {
    fsm.applyEntries([
      cmd({ op: "config.patch", changes: { "cluster.description": `v${i}` }, by: "t", at: i }),
    ]);
  }
  const bg = await fsm.snapshotInBackground();
  assertEquals(bg.index, fsm.appliedIndex());
  assertEquals(JSON.parse(bg.data), JSON.parse(fsm.snapshotData()));
  assertEquals(bg.conf, fsm.confState());
  const other = new StateMachine(join(await Deno.makeTempDir(), "s.db"));
  other.restore(bg.data, bg.index);
  assertEquals(other.configHistory(5000).length, 4501);
  assertEquals(other.config().config["cluster.description"], "v4499");
});
