/**
 * Disaster recovery on real SQLite files and real ClusterNodes (no processes):
 * the backup format's checks, a backup restored into a new data dir, and a
 * forced new cluster on a stopped node's data dir with an uncommitted tail.
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { assert, assertEquals } from "../testing/assert.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { ClusterNode, delay } from "../cluster/node.ts";
import { readIdentity, SqliteRaftLog } from "../store/mod.ts";
import { StateMachine } from "../fsm/mod.ts";
import { sha256Hex } from "../secrets/mod.ts";
import { NovaError, ValidationError } from "../errors/mod.ts";
import { openClusterBackup } from "./backup.ts";
import { readBackup } from "./backup_file.ts";
import { restoreDataDir } from "./restore.ts";
import { forceNewCluster, RECOVERY_TOKEN_FILE } from "./force_new_cluster.ts";
import { assertNodeStopped, assertNoRewriteRunning } from "./node_lock.ts";

async function writeBackup(cluster: TestCluster, file: string): Promise<void> {
  await cluster.node.linearizableRead();
  const { body } = await openClusterBackup(cluster.node);
  const out = await Deno.open(file, { write: true, create: true, truncate: true });
  await body.pipeTo(out.writable);
}

async function rejects(p: Promise<unknown>, match: RegExp): Promise<Error> {
  try {
    await p;
  } catch (err) {
    assert(match.test((err as Error).message), `"${(err as Error).message}" !~ ${match}`);
    return err as Error;
  }
  throw new Error(`expected a rejection matching ${match}`);
}

/** A node on a recovered data dir: it must lead alone and take writes. */
async function startAlone(dataDir: string): Promise<ClusterNode> {
  const identity = (await readIdentity(dataDir))!;
  const node = new ClusterNode({ dataDir, identity, tickMs: 10, onFatal: () => {} });
  node.start();
  for (let i = 0; i < 500 && !node.isLeader(); i++) await delay(10);
  assert(node.isLeader(), "the recovered node leads");
  return node;
}

const names = <T extends { name: string }>(xs: T[]) => xs.map((x) => x.name).sort();

Deno.test("a backup restores into a new data dir with the same state, this node alone", async () => {
  const cluster = await TestCluster.start();
  const dir = await Deno.makeTempDir({ prefix: "novactl-restore-" });
  try {
    await cluster.addHost("n2");
    await cluster.vm({ name: "web1", node: "n1" });
    await cluster.vm({ name: "web2", node: "n2" }, "stopped");
    const file = join(dir, "cluster.backup");
    await writeBackup(cluster, file);
    const header = await readBackup(file);
    assertEquals(header.clusterId, cluster.node.identity.clusterId);
    assertEquals(names(header.members), ["n1", "n2"]);
    assert(header.index >= cluster.node.fsm.appliedIndex() - 1, "taken at the applied index");
    assertEquals((await Deno.stat(join(cluster.dataDir, "snapshots"))).isDirectory, true);
    // The temporary snapshot file is gone once the stream ended.
    for await (const f of Deno.readDir(join(cluster.dataDir, "snapshots"))) {
      assert(!f.name.startsWith(".tmp-"), `left ${f.name}`);
    }

    const target = join(dir, "restored");
    const r = await restoreDataDir({
      dataDir: target,
      file,
      name: "n1",
      url: "http://127.0.0.1:2",
    });
    assertEquals(r.removed, ["n2"]);
    const node = await startAlone(target);
    try {
      assertEquals(node.fsm.members().map((m) => [m.name, m.role, m.url]), [
        ["n1", "voter", "http://127.0.0.1:2"],
      ]);
      assertEquals(names(node.fsm.vms()), ["web1", "web2"]);
      assertEquals(node.fsm.vm("web2")!.node, "n2");
      assertEquals(names(node.fsm.images()), names(cluster.node.fsm.images()));
      assertEquals(node.fsm.config().version, cluster.node.fsm.config().version);
      // Old tokens work, the new admin token too; n2's certificate is revoked.
      assertEquals(node.fsm.checkApiToken(sha256Hex(cluster.adminToken), Date.now()).ok, true);
      const secret = (await Deno.readTextFile(join(target, "admin.token"))).trim();
      assertEquals(node.fsm.checkApiToken(sha256Hex(secret), Date.now()).ok, true);
      assertEquals(node.fsm.memberCert("n2"), null);
      assertEquals(node.fsm.clusterCa()!.certPem, cluster.node.fsm.clusterCa()!.certPem);
      await node.propose({
        op: "config.patch",
        changes: { "cluster.description": "after" },
        by: "t",
        at: 1,
      });
    } finally {
      await node.stop();
    }
  } finally {
    await cluster.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a truncated, corrupt or foreign backup is refused, naming the file, and nothing is left", async () => {
  const cluster = await TestCluster.start();
  const dir = await Deno.makeTempDir({ prefix: "novactl-restore-" });
  try {
    const file = join(dir, "good.backup");
    await writeBackup(cluster, file);
    const bytes = await Deno.readFile(file);
    const bad = async (name: string, data: Uint8Array, match: RegExp) => {
      const path = join(dir, name);
      await Deno.writeFile(path, data);
      const target = join(dir, `${name}.dir`);
      const err = await rejects(
        restoreDataDir({ dataDir: target, file: path, name: "n1", url: "http://127.0.0.1:2" }),
        match,
      );
      assert(err instanceof ValidationError && err.message.includes(path), err.message);
      const left = [...Deno.readDirSync(target)].map((e) => e.name);
      assertEquals(left, [], `${name}: the data dir is left empty`);
    };
    await bad("cut", bytes.subarray(0, bytes.length - 100), /is truncated/);
    const flipped = bytes.slice();
    flipped[flipped.length - 50] ^= 0x01;
    await bad("flipped", flipped, /is corrupt/);
    await bad("foreign", new TextEncoder().encode('{"hello":1}\n'), /not a novactl cluster backup/);
    await bad("nothing", new Uint8Array(0), /is empty/);
    await bad("longer", new Uint8Array([...bytes, 10]), /more than/);
    // A well-formed backup whose state cannot make a cluster (no CA): refused after the
    // databases were made, which must go again.
    const [head, ...rest] = new TextDecoder().decode(bytes).split("\n");
    const snapshot = rest.filter((l) => !l.startsWith('["cluster_ca",')).join("\n");
    const data = new TextEncoder().encode(snapshot);
    const header = {
      ...JSON.parse(head),
      bytes: data.length,
      sha256: createHash("sha256").update(data).digest("hex"),
    };
    await bad(
      "no-ca",
      new TextEncoder().encode(JSON.stringify(header) + "\n" + snapshot),
      /no cluster CA/,
    );
  } finally {
    await cluster.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("force-new-cluster keeps every entry the survivor holds and leaves it sole voter", async () => {
  const cluster = await TestCluster.start();
  const dataDir = cluster.dataDir;
  try {
    await cluster.addHost("n2");
    await cluster.addHost("n3");
    await cluster.vm({ name: "db1", node: "n3" }, "stopped");
    await cluster.node.stop();
    // An entry the survivor received but never learned was committed.
    const log = new SqliteRaftLog(join(dataDir, "raft.db"));
    const last = log.lastIndex();
    const term = log.term(last);
    await log.save({
      snapshot: null,
      entries: [{
        index: last + 1,
        term,
        type: "normal",
        data: JSON.stringify({
          op: "apiToken.create",
          hash: sha256Hex("tail-secret"),
          name: "tail",
          role: "viewer",
          by: "test",
          at: Date.now(),
        }),
      }],
      hardState: null,
    });
    await log.close();

    const r = await forceNewCluster(dataDir);
    assertEquals(r.removed, ["n2", "n3"]);
    assertEquals(r.appliedNow.uncommitted, 1);
    assertEquals(r.before.lastIndex, last + 1);
    assertEquals(r.vms, 1);

    const node = await startAlone(dataDir);
    try {
      assertEquals(node.fsm.confState(), { voters: ["n1"], learners: [] });
      assertEquals(node.fsm.vm("db1")!.node, "n3");
      assertEquals(node.fsm.checkApiToken(sha256Hex("tail-secret"), Date.now()).ok, true);
      const recovery = (await Deno.readTextFile(join(dataDir, RECOVERY_TOKEN_FILE))).trim();
      assertEquals(node.fsm.checkApiToken(sha256Hex(recovery), Date.now()).ok, true);
      const audit = node.fsm.auditEntries({ principal: "system:recovery" });
      assertEquals(audit.map((a) => a.route), ["cluster.forceNewCluster"]);
      await node.propose({
        op: "config.patch",
        changes: { "cluster.description": "x" },
        by: "t",
        at: 1,
      });
      assert(node.fsm.appliedIndex() > r.index, "a new write commits");
    } finally {
      await node.stop();
    }
  } finally {
    await cluster.stop();
  }
});

Deno.test("recovery refuses a running node's data dir, and node start a running recovery", async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-lock-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "await new Promise((r) => setTimeout(r, 60_000))", "--data-dir", dir],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const other = new Deno.Command(Deno.execPath(), {
    args: ["eval", "await new Promise((r) => setTimeout(r, 60_000))", "--data-dir", "/elsewhere"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Right after the spawn a child may not have exec'd yet (its command line is still ours).
  const execed = async (pid: number, arg: string) => {
    for (let i = 0; i < 500; i++) {
      const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
      if (cmdline.includes(arg)) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`process ${pid} never ran with ${arg}`);
  };
  try {
    await execed(child.pid, dir);
    await execed(other.pid, "/elsewhere");
    await Deno.writeTextFile(join(dir, "listen.json"), JSON.stringify({ pid: child.pid }));
    const err = await rejects(
      assertNodeStopped(dir),
      new RegExp(`process ${child.pid} is running`),
    );
    assert(err instanceof NovaError && err.code === "conflict");
    // A stale pid that now belongs to a process of another data dir does not count.
    await Deno.writeTextFile(join(dir, "listen.json"), JSON.stringify({ pid: other.pid }));
    await assertNodeStopped(dir);
    // A rewrite in another live process holds the dir; `node start` checks the same.
    await Deno.writeTextFile(join(dir, "recover.lock"), JSON.stringify({ pid: other.pid }));
    await rejects(assertNoRewriteRunning(dir), new RegExp(`process ${other.pid} is rewriting`));
    await rejects(assertNodeStopped(dir), /is rewriting/);
    // Its lock left by a crash (a dead pid) is ignored.
    await Deno.writeTextFile(join(dir, "recover.lock"), JSON.stringify({ pid: 999_999_999 }));
    await assertNoRewriteRunning(dir);
  } finally {
    for (const c of [child, other]) {
      c.kill("SIGKILL");
      await c.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a state machine with the wrong cluster is refused before anything changes", async () => {
  const cluster = await TestCluster.start();
  try {
    await cluster.node.stop();
    const fsm = new StateMachine(join(cluster.dataDir, "state.db"));
    const applied = fsm.appliedIndex();
    fsm.close();
    const id = (await readIdentity(cluster.dataDir))!;
    await Deno.writeTextFile(
      join(cluster.dataDir, "node.json"),
      JSON.stringify({ ...id, clusterId: "other" }),
    );
    await rejects(forceNewCluster(cluster.dataDir), /belongs to cluster/);
    const after = new StateMachine(join(cluster.dataDir, "state.db"));
    assertEquals(after.appliedIndex(), applied);
    after.close();
  } finally {
    await cluster.stop();
  }
});
