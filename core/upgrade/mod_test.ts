import {
  admitting,
  assertCommandAllowed,
  assertDataDirSupported,
  assertJoinerSupported,
  levelOfCommand,
  levelOfOp,
  levelOfVersion,
  MAX_KNOWN_LEVEL,
  memberSupport,
  OP_LEVEL,
  OPERATION_KIND_LEVEL,
  operationKindAllowed,
  PROGRAM_MAX_LEVEL,
  supportedLevel,
  Upgrader,
} from "./mod.ts";
import { VERSION } from "../version.ts";
import { SNAPSHOT_OPERATION_KINDS } from "../cluster/snapshot_service.ts";
import { APPLIERS } from "../fsm/resources.ts";
import { apply, fresh, refused } from "../testing/fsm.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { ApplyFailedError, FeatureUnavailableError, NovaError } from "../errors/mod.ts";
import { type Command, type Inventory, StateMachine } from "../fsm/mod.ts";
import { assertDataDirUsable, dataDirLevel } from "./data_dir.ts";
import { DatabaseSync } from "node:sqlite";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

/** Every command kind release 0.1.0 could apply (`git show v0.1.0:core/fsm/resources.ts`). */
const OPS_OF_0_1_0 = [
  "alert.fire",
  "alert.resolve",
  "alert.rule.create",
  "alert.rule.delete",
  "alert.rule.update",
  "apiToken.create",
  "apiToken.revoke",
  "apiToken.rotate",
  "audit.append",
  "backup.delete",
  "backup.record",
  "backup.schedule.delete",
  "backup.schedule.ran",
  "backup.schedule.set",
  "backup.target.create",
  "backup.target.delete",
  "cluster.init",
  "config.patch",
  "config.replace",
  "config.rollback",
  "fip.attach",
  "fip.create",
  "fip.delete",
  "fip.detach",
  "group.create",
  "group.delete",
  "image.create",
  "image.delete",
  "joinToken.consume",
  "joinToken.create",
  "joinToken.voidAll",
  "network.create",
  "network.delete",
  "node.bridgeMappings",
  "node.remove",
  "node.state",
  "node.upsert",
  "noop",
  "operation.create",
  "operation.update",
  "plan.apply",
  "pool.create",
  "pool.delete",
  "router.attach",
  "router.create",
  "router.delete",
  "router.detach",
  "router.uplink",
  "sg.create",
  "sg.delete",
  "sg.rule.add",
  "sg.rule.remove",
  "vm.create",
  "vm.desired",
  "vm.disk.attach",
  "vm.disk.detach",
  "vm.migrated",
  "vm.moved",
  "vm.nic.add",
  "vm.nic.remove",
  "vm.observed",
  "vm.remove",
  "vm.snapshot.add",
  "vm.snapshot.remove",
  "vm.update",
  "volume.create",
  "volume.delete",
  "volume.resize",
];

const inventory = (version: string): Inventory => ({
  cpus: 2,
  memoryMiB: 2048,
  diskGiB: 10,
  diskFreeGiB: 5,
  accel: "tcg",
  arch: "x86_64",
  kernel: "6",
  hostname: "h",
  version,
});

const upsert = (name: string, version: string): Command => ({
  op: "node.upsert",
  name,
  url: `http://${name}`,
  inventory: inventory(version),
  labels: {},
  at: 2,
});

const meta = (name: string): Command => ({
  op: "node.meta",
  name,
  meta: { rack: "r7" },
  by: "test",
  at: 3,
});

testWithTimeout({
  name: "a version supports the levels of every release up to it; none or junk is level 1",
  timeoutMs: MINUTE,
}, () => {
  assertEquals(levelOfVersion("0.1.0"), 1);
  assertEquals(levelOfVersion("0.2.0"), 2);
  assertEquals(levelOfVersion("0.2.0 (simulated host)"), 2);
  assertEquals(levelOfVersion("0.10.0"), 2, "numeric, not text, comparison");
  assertEquals(levelOfVersion("1.0.0"), MAX_KNOWN_LEVEL, "a newer release drops no level");
  assertEquals(levelOfVersion(null), 1);
  assertEquals(levelOfVersion("test"), 1);
  assertEquals(levelOfVersion(VERSION), PROGRAM_MAX_LEVEL);
  assertEquals(PROGRAM_MAX_LEVEL, 2, "this release (0.2.0) brings level 2");
});

testWithTimeout({
  name: "every command kind newer than release 0.1.0 declares the level it needs",
  timeoutMs: MINUTE,
}, () => {
  const old = new Set(OPS_OF_0_1_0);
  for (const op of Object.keys(APPLIERS)) {
    if (old.has(op) || op === "cluster.upgrade") continue; // the upgrader's own, see levels.ts
    assert(
      levelOfOp(op) >= 2,
      `${op} is new since 0.1.0, which cannot apply it: give it a level in core/upgrade/levels.ts OP_LEVEL`,
    );
  }
  for (const [op, level] of Object.entries(OP_LEVEL)) {
    assert(!old.has(op), `${op} is as old as 0.1.0 and needs no level (${level})`);
  }
});

testWithTimeout({
  name: "cluster.upgrade records the level once (idempotent); node.meta is refused below it",
  timeoutMs: MINUTE,
}, async () => {
  const fsm = await fresh();
  apply(fsm, upsert("h1", "0.2.0"));
  assertEquals(fsm.clusterLevel(), 1, "no level recorded is level 1");
  const early = refused(fsm, meta("h1"));
  assert(early instanceof FeatureUnavailableError, String(early));
  assertEquals(fsm.nodeMeta("h1"), {});
  const snapshot = fsm.snapshotData();
  assert(
    !/"cluster_level"|"node_meta"/.test(snapshot),
    "at level 1 a snapshot holds no row an older release could not restore",
  );

  assertEquals(apply(fsm, { op: "cluster.upgrade", level: 2, at: 5 }), {
    level: 2,
    changed: true,
  });
  assertEquals(apply(fsm, { op: "cluster.upgrade", level: 2, at: 6 }), {
    level: 2,
    changed: false,
  });
  assertEquals(apply(fsm, { op: "cluster.upgrade", level: 1, at: 7 }), {
    level: 2,
    changed: false,
  });
  assertEquals(fsm.clusterLevel(), 2);
  assertEquals(fsm.clusterLevels().map((l) => [l.level, l.since]), [[2, "0.2.0"]]);
  apply(fsm, meta("h1"));
  assertEquals(fsm.nodeMeta("h1"), { rack: "r7" });
  apply(fsm, { op: "node.remove", name: "h1", at: 8 });
  assertEquals(fsm.nodeMeta("h1"), {}, "a removed host's metadata goes with it");
  fsm.close();
});

testWithTimeout({
  name: "a level this program does not know halts the node instead of being skipped",
  timeoutMs: MINUTE,
}, async () => {
  const fsm = await fresh();
  const before = fsm.appliedIndex();
  const e = {
    index: before + 1,
    term: 1,
    type: "normal" as const,
    data: JSON.stringify({ op: "cluster.upgrade", level: MAX_KNOWN_LEVEL + 1, at: 2 }),
  };
  const err = assertThrows(() => fsm.applyEntries([e]), ApplyFailedError);
  assert(/not known to novactl/.test(err.message), err.message);
  assertEquals(fsm.appliedIndex(), before, "nothing applied");
  assertEquals(fsm.clusterLevel(), 1);
  fsm.close();
});

testWithTimeout({
  name: "an older program refuses a newer data dir, naming both versions",
  timeoutMs: MINUTE,
}, () => {
  assertDataDirSupported(PROGRAM_MAX_LEVEL, "/d");
  const err = assertThrows(() => assertDataDirSupported(PROGRAM_MAX_LEVEL + 1, "/d"), NovaError);
  assertEquals(err.code, "usage");
  assert(err.message.includes(`this is novactl ${VERSION}`), err.message);
  assert(err.message.includes(`at cluster level ${PROGRAM_MAX_LEVEL + 1}`), err.message);
});

testWithTimeout({
  name: "a joiner whose release cannot apply the cluster's level is refused",
  timeoutMs: MINUTE,
}, () => {
  assertJoinerSupported("n4", "0.1.0", 1);
  assertJoinerSupported("n4", "0.2.0", 2);
  const err = assertThrows(() => assertJoinerSupported("n4", "0.1.0", 2), FeatureUnavailableError);
  assert(/n4 runs novactl 0\.1\.0.*level 2.*0\.2\.0 or newer/.test(err.message), err.message);
});

/** The fsm's member and level reads, with versions as given. */
function reads(fsm: StateMachine) {
  return {
    members: () => fsm.members(),
    nodes: () => fsm.nodes(),
    clusterLevel: () => fsm.clusterLevel(),
  };
}

testWithTimeout({
  name: "the leader refuses a level-2 command, naming who is not upgraded, and upgrades " +
    "once every member supports level 2",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cluster = await TestCluster.start({}, { level: 1 }); // as release 0.1.0 made it
  const node = cluster.node;
  try {
    await cluster.addHost("n2");
    await node.propose(upsert("n1", "0.2.0"));
    await node.propose(upsert("n2", "0.1.0"));
    // A member that never registered a host record counts as level 1 too.
    await node.changeMembership({ type: "addLearner", node: "n3", context: "{}" });
    assertEquals(
      memberSupport(reads(node.fsm)).map((m) => [m.name, m.role, m.version, m.maxLevel]),
      [["n1", "voter", "0.2.0", 2], ["n2", "learner", "0.1.0", 1], ["n3", "learner", null, 1]],
    );
    assertEquals(supportedLevel(memberSupport(reads(node.fsm))), 1);

    const last = node.raft.basicStatus().lastIndex;
    const gate = await assertRejects(() => node.propose(meta("n1")), FeatureUnavailableError);
    assertEquals(gate.code, "feature_unavailable");
    assert(
      gate.message.includes(
        "node.meta needs cluster level 2; the cluster runs at level 1: not every member runs novactl 0.2.0 or newer yet: n2 (learner, 0.1.0), n3 (learner, no version reported)",
      ),
      gate.message,
    );
    assertEquals(node.raft.basicStatus().lastIndex, last, "nothing entered the log");

    const proposed: number[] = [];
    const upgrader = new Upgrader({
      fsm: node.fsm,
      isLeader: () => node.isLeader(),
      propose: (c) => {
        proposed.push(c.level);
        return node.propose(c);
      },
    });
    assertEquals(await upgrader.check(), null, "n2 and n3 hold the level at 1");
    await node.propose(upsert("n2", "0.2.0"));
    assertEquals(await upgrader.check(), null, "n3 still reports nothing");
    await node.propose(upsert("n3", "0.2.0 (simulated host)"));
    assertEquals(await upgrader.check(), 2);
    assertEquals(await upgrader.check(), null, "once is enough");
    assertEquals(proposed, [2]);
    assertEquals(node.fsm.clusterLevel(), 2);
    assertEquals(node.status().level, 2);
    assertEquals(node.status().members.find((m) => m.name === "n2")?.version, "0.2.0");

    await node.propose(meta("n1"));
    assertEquals(node.fsm.nodeMeta("n1"), { rack: "r7" });
    assertCommandAllowed(meta("n1"), reads(node.fsm));
  } finally {
    await cluster.stop();
  }
});

testWithTimeout({
  name: "a data dir's level is read without opening it for writing: none, 1, or what it reached",
  timeoutMs: MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  assertEquals(dataDirLevel(dir), null, "no state yet");
  const fsm = new StateMachine(`${dir}/state.db`);
  assertEquals(dataDirLevel(dir), 1);
  fsm.close();
  const old = await Deno.makeTempDir();
  const db = new DatabaseSync(`${old}/state.db`);
  db.exec("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
  db.close();
  assertEquals(dataDirLevel(old), 1, "a 0.1.0 state has no cluster_level table");
  const up = await fresh();
  apply(up, { op: "cluster.upgrade", level: 2, at: 1 });
  const path = up.path;
  up.close();
  const upDir = path.slice(0, path.lastIndexOf("/"));
  assertEquals(dataDirLevel(upDir), 2);
  assertDataDirUsable(upDir);
});

testWithTimeout({
  name: "an upgrade waits for joins under way, and holds back new ones until it is done",
  timeoutMs: MINUTE,
}, async () => {
  const order: string[] = [];
  let releaseJoin!: () => void;
  const joinHeld = new Promise<void>((r) => releaseJoin = r);
  let level = 1;
  const fsm = {
    members: () => [{ name: "n1", url: "", role: "voter" as const }],
    nodes: () => [{ name: "n1", inventory: { version: "0.2.0" } }] as never,
    clusterLevel: () => level,
  };
  const upgrader = new Upgrader({
    fsm,
    isLeader: () => true,
    propose: (c) => {
      order.push("upgrade");
      level = c.level;
      return Promise.resolve(null);
    },
  });
  const join1 = admitting(async () => {
    order.push("join1 checks");
    await joinHeld;
    order.push("join1 added");
  });
  const upgraded = upgrader.check();
  await new Promise((r) => setTimeout(r, 20));
  const join2 = admitting(() => {
    order.push(`join2 checks at level ${level}`);
    return Promise.resolve();
  });
  await new Promise((r) => setTimeout(r, 20));
  assertEquals(order, ["join1 checks"], "the upgrade waits for join1; join2 waits for it");
  releaseJoin();
  await Promise.all([join1, upgraded, join2]);
  assertEquals(order, ["join1 checks", "join1 added", "upgrade", "join2 checks at level 2"]);
});

testWithTimeout({
  name: "operation kinds newer than release 0.1.0 declare their level; older kinds need none",
  timeoutMs: MINUTE,
}, () => {
  const create = (kind: string) => ({ op: "operation.create", operation: { kind } });
  for (const kind of ["migrate", "drain", "evacuate", "rebalance", "backup", "restore", "verify"]) {
    assertEquals(levelOfCommand(create(kind)), 1, `${kind} is as old as 0.1.0`);
  }
  // A 0.1.0 host would never run these: they wait until every member can.
  for (const kind of SNAPSHOT_OPERATION_KINDS) {
    assertEquals(levelOfCommand(create(kind)), 2, kind);
    assertEquals(OPERATION_KIND_LEVEL[kind], 2);
  }
  assertEquals(levelOfCommand({ op: "node.meta" }), 2, "the command's own level still counts");
  // Below it, the routes run snapshots as 0.1.0 did (api/routes/vms.ts).
  assertEquals(
    [operationKindAllowed("snapshot-create", 1), operationKindAllowed("snapshot-create", 2)],
    [false, true],
  );
  assert(operationKindAllowed("migrate", 1));
});
