/**
 * Pools, volumes and attached disks in the replicated state: the upgrade path from a state
 * written before pools existed, the appliers' refusals, and attach/detach bookkeeping.
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { StateMachine } from "./state_machine.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { Command, Inventory, PoolSpec } from "./commands.ts";
import type { Entry } from "../raft/types.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

let idx = 0;
const entry = (c: Command | Record<string, unknown>): Entry => ({
  index: ++idx,
  term: 1,
  type: "normal",
  data: JSON.stringify(c),
});

/** Applies `cmds` one entry each; returns each outcome. */
function apply(fsm: StateMachine, ...cmds: (Command | Record<string, unknown>)[]) {
  const entries = cmds.map(entry);
  const r = fsm.applyEntries(entries);
  return entries.map((e) => r.get(e.index)!);
}

const GiB = 2 ** 30;
const inventory = (pools: Inventory["pools"] = {}): Inventory => ({
  cpus: 4,
  memoryMiB: 8192,
  diskGiB: 100,
  diskFreeGiB: 50,
  accel: "tcg",
  arch: "x86_64",
  kernel: "k",
  hostname: "h",
  version: "0",
  pool: { volumes: 0, virtualBytes: 0, allocatedBytes: 0, freeBytes: 40 * GiB },
  pools,
});

const vm = (name: string, pool: string | undefined) => ({
  name,
  uuid: `u-${name}`,
  image: "img",
  cpus: 1,
  memoryMiB: 256,
  node: "n1",
  ha: false,
  labels: {},
  desired: "stopped",
  restartPolicy: "never",
  disks: [{
    id: "root",
    ...(pool === undefined ? {} : { pool }),
    volume: `${name}-root`,
    sizeBytes: GiB,
    source: { kind: "blank" },
  }],
  cloudInit: null,
  template: false,
  generation: 0,
  snapshots: [],
});

async function fresh(): Promise<{ fsm: StateMachine; path: string }> {
  idx = 0;
  const path = join(await Deno.makeTempDir(), "state.db");
  const fsm = new StateMachine(path);
  apply(
    fsm,
    {
      op: "cluster.init",
      clusterId: "c1",
      member: { name: "n1", url: "http://a" },
      adminTokenHash: "h",
      config: DEFAULT_CONFIG,
      at: 1,
    },
    {
      op: "image.create",
      image: {
        name: "img",
        kind: "kernel",
        kernel: { sha256: "a".repeat(64), size: 1 },
        sources: [],
      },
      by: "t",
      at: 2,
    },
    { op: "node.upsert", name: "n1", url: "http://a", inventory: inventory(), labels: {}, at: 3 },
    { op: "node.upsert", name: "n2", url: "http://b", inventory: inventory(), labels: {}, at: 3 },
  );
  return { fsm, path };
}

testWithTimeout({
  name: "upgrade: a state from before pools keeps every VM, and its disks' pools exist",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, path } = await fresh();
  apply(
    fsm,
    { op: "config.patch", changes: { "storage.sharedDir": "/mnt/shared" }, by: "t", at: 4 },
    { op: "vm.create", vm: vm("old-implicit", undefined), by: "t", at: 5 },
    { op: "vm.create", vm: vm("old-dir", "dir"), by: "t", at: 5 },
    { op: "vm.create", vm: vm("old-shared", "shared"), by: "t", at: 5 },
  );
  const before = fsm.snapshotData();
  fsm.close();
  // What an older version wrote: no pools or volumes tables at all.
  const db = new DatabaseSync(path);
  db.exec("DROP TABLE pools; DROP TABLE volumes;");
  db.close();

  const upgraded = new StateMachine(path);
  assertEquals(upgraded.vms().map((v) => v.name), ["old-dir", "old-implicit", "old-shared"]);
  assertEquals(upgraded.pools.all().map((p) => [p.name, p.driver, p.source]), [
    ["dir", "dir", null],
    ["shared", "shared-dir", "/mnt/shared"],
  ]);
  assertEquals(upgraded.pools.view("dir")!.vmDisks, 2, "absent pool means dir");
  assertEquals(upgraded.pools.view("shared")!.vmDisks, 1);
  assertEquals(Object.keys(upgraded.pools.view("dir")!.hosts), ["n1", "n2"]);
  assert(upgraded.pools.isSharedDisk(upgraded.vm("old-shared")!.disks[0]));
  assert(!upgraded.pools.isSharedDisk(upgraded.vm("old-implicit")!.disks[0]));
  const [del] = apply(upgraded, { op: "pool.delete", name: "dir", by: "t", at: 6 });
  assert(!del.ok && /built in/.test(del.error.message));

  // An old VM takes a new volume like any other.
  const [created, attached] = apply(
    upgraded,
    {
      op: "volume.create",
      volume: { name: "data", pool: "dir", node: "n1", sizeBytes: GiB, fromImage: null },
      by: "t",
      at: 7,
    },
    { op: "vm.disk.attach", name: "old-implicit", volume: "data", by: "t", at: 8 },
  );
  assert(created.ok && attached.ok, JSON.stringify([created, attached]));
  assertEquals(upgraded.vm("old-implicit")!.disks.map((d) => d.id), ["root", "vd0"]);

  // A snapshot written before pools (no pools or volumes rows) restores the same way.
  const restored = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  restored.restore(before, 5);
  assertEquals(restored.vms().length, 3);
  assertEquals(restored.pools.view("dir")!.vmDisks, 2);
  upgraded.close();
  restored.close();
});

const btrfs = (extra: Partial<PoolSpec> = {}): PoolSpec => ({
  name: "fast",
  driver: "btrfs",
  source: "/mnt/fast",
  node: "n2",
  loop: null,
  ...extra,
});

testWithTimeout({
  name: "pools: bad input names its field, and nothing is written",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const refused = apply(
    fsm,
    { op: "pool.create", pool: btrfs({ name: "Bad" }), by: "t", at: 4 },
    { op: "pool.create", pool: btrfs({ name: "shared" }), by: "t", at: 4 },
    { op: "pool.create", pool: btrfs({ source: "relative" }), by: "t", at: 4 },
    { op: "pool.create", pool: btrfs({ node: "n9" }), by: "t", at: 4 },
    { op: "pool.create", pool: btrfs({ driver: "shared-dir" }), by: "t", at: 4 },
    {
      op: "pool.create",
      pool: btrfs({ node: null, loop: { image: "/x.img", sizeBytes: GiB } }),
      by: "t",
      at: 4,
    },
  );
  const fields = refused.map((r) => !r.ok && r.error.message.split(":")[0]);
  assertEquals(fields, ["name", "name", "source", "node", "node", "node"]);
  assertEquals(fsm.pools.all().map((p) => p.name), ["dir"]);
  const [ok, again] = apply(
    fsm,
    { op: "pool.create", pool: btrfs(), by: "t", at: 5 },
    { op: "pool.create", pool: btrfs({ name: "other" }), by: "t", at: 6 },
  );
  assert(ok.ok);
  assert(!again.ok && /already uses/.test(again.error.message), "one source, one pool");
});

testWithTimeout({
  name: "volumes: free space (with overcommit), attach rules, and a deleted VM lets go",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const pools = {
    fast: { totalBytes: 10 * GiB, freeBytes: 4 * GiB, allocatedBytes: 0, volumes: 0 },
  };
  apply(
    fsm,
    {
      op: "node.upsert",
      name: "n2",
      url: "http://b",
      inventory: inventory(pools),
      labels: {},
      at: 4,
    },
    { op: "pool.create", pool: btrfs(), by: "t", at: 4 },
    { op: "vm.create", vm: vm("a", undefined), by: "t", at: 5 },
    { op: "vm.create", vm: { ...vm("b", undefined), node: "n2" }, by: "t", at: 5 },
  );
  const fast = fsm.pools.get("fast")!;
  let refusal = "";
  try {
    fsm.pools.assertRoom(fast, "n2", 6 * GiB, "size");
  } catch (err) {
    refusal = (err as Error).message;
  }
  assert(/6\.00 GiB requested, pool "fast" has 4\.00 GiB free on n2/.test(refusal), refusal);
  apply(fsm, { op: "config.patch", changes: { "storage.overcommit": 2 }, by: "t", at: 6 });
  fsm.pools.assertRoom(fast, "n2", 6 * GiB, "size"); // 8 GiB with overcommit 2

  const vol = { name: "v1", pool: "fast", node: null, sizeBytes: GiB, fromImage: null };
  const [created, wrongHost, attach, twice, detachRoot] = apply(
    fsm,
    { op: "volume.create", volume: vol, by: "t", at: 7 },
    { op: "vm.disk.attach", name: "a", volume: "v1", by: "t", at: 8 },
    { op: "vm.disk.attach", name: "b", volume: "v1", by: "t", at: 8 },
    { op: "vm.disk.attach", name: "a", volume: "v1", by: "t", at: 8 },
    { op: "vm.disk.detach", name: "b", disk: "root", by: "t", at: 9 },
  );
  assert(created.ok);
  assertEquals(fsm.volumes.get("v1")!.node, "n2", "a pool's one host holds its volumes");
  assert(!wrongHost.ok && /attaches only to a VM on its host/.test(wrongHost.error.message));
  assert(attach.ok);
  assert(!twice.ok && /attached to VM "b"/.test(twice.error.message));
  assert(!detachRoot.ok && /own disk/.test(detachRoot.error.message));
  assertEquals(fsm.volumes.get("v1")!.attachedTo, "b");
  const [delAttached, delPool] = apply(
    fsm,
    { op: "volume.delete", name: "v1", by: "t", at: 10 },
    { op: "pool.delete", name: "fast", by: "t", at: 10 },
  );
  assert(!delAttached.ok && /detach it first/.test(delAttached.error.message));
  assert(!delPool.ok && /1 volume/.test(delPool.error.message));

  // Resizing an attached volume grows the VM's disk record too.
  apply(fsm, { op: "volume.resize", name: "v1", sizeBytes: 2 * GiB, by: "t", at: 11 });
  assertEquals(fsm.vm("b")!.disks[1].sizeBytes, 2 * GiB);

  // Deleting the VM (never placed: removed at once) detaches, never deletes, the volume.
  apply(
    fsm,
    { op: "vm.desired", name: "b", desired: "deleted", by: "t", at: 12 },
    { op: "vm.remove", name: "b", node: "n2", at: 13 },
  );
  assertEquals(fsm.vm("b"), null);
  assertEquals(fsm.volumes.get("v1")!.attachedTo, null);
});

testWithTimeout({
  name:
    "attached disks: ports reused, root disk of a running VM refused, migration moves local volumes",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm } = await fresh();
  const mk = (name: string) => ({
    op: "volume.create",
    volume: { name, pool: "dir", node: "n1", sizeBytes: GiB, fromImage: null },
    by: "t",
    at: 4,
  });
  apply(
    fsm,
    { op: "vm.create", vm: { ...vm("a", undefined), desired: "running" }, by: "t", at: 4 },
    { op: "vm.observed", name: "a", node: "n1", state: "running", at: 5 },
    mk("x"),
    mk("y"),
    { op: "vm.disk.attach", name: "a", volume: "x", by: "t", at: 6 },
    { op: "vm.disk.attach", name: "a", volume: "y", by: "t", at: 6 },
    { op: "vm.disk.detach", name: "a", disk: "x", by: "t", at: 7 },
  );
  assertEquals(fsm.vm("a")!.disks.map((d) => [d.id, d.port]), [["root", undefined], ["vd1", 1]]);
  apply(fsm, { op: "vm.disk.attach", name: "a", volume: "x", by: "t", at: 8 });
  assertEquals(fsm.vm("a")!.disks.map((d) => d.id), ["root", "vd1", "vd0"], "lowest free port");
  const [root] = apply(fsm, { op: "vm.disk.detach", name: "a", disk: "root", by: "t", at: 9 });
  assert(!root.ok && /root disk of running VM "a"/.test(root.error.message), String(root.ok));
  apply(fsm, {
    op: "vm.migrated",
    name: "a",
    from: "n1",
    to: "n2",
    opId: "op1",
    at: 10,
  });
  assertEquals(fsm.volumes.get("x")!.node, "n2", "a host-local volume moves with its VM");
});
