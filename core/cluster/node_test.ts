/**
 * The driver around the Raft core on real SQLite files: what it does with
 * messages that reveal a broken invariant, and with messages from non-members.
 */
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { NovaError, UnavailableError } from "../errors/mod.ts";
import { RaftInvariantError } from "../raft/mod.ts";
import type { Message } from "../raft/types.ts";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { readIdentity } from "../store/mod.ts";
import { bootstrapCluster } from "./bootstrap.ts";
import { ClusterNode, delay } from "./node.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

/** A bootstrapped one-voter node that leads and has applied an entry of its term. */
async function leadingNode(
  dataDir?: string,
): Promise<{ node: ClusterNode; fatal: unknown[]; dataDir: string }> {
  let identity = dataDir ? await readIdentity(dataDir) : null;
  if (!identity) {
    dataDir = await Deno.makeTempDir();
    identity = (await bootstrapCluster(dataDir, "n1", "http://127.0.0.1:1")).identity;
  }
  const fatal: unknown[] = [];
  const node = new ClusterNode({
    dataDir: dataDir!,
    identity,
    tickMs: 10,
    onFatal: (e) => fatal.push(e),
  });
  node.start();
  for (let i = 0; i < 500; i++) {
    const s = node.raft.status();
    if (s.role === "leader" && node.raft.termAt(s.applied) === s.term) break;
    await delay(10);
  }
  assert(node.isLeader(), "the lone voter leads");
  // A learner that never answers: a member whose messages pass the screen.
  if (!node.fsm.member("n2")) {
    await node.changeMembership({ type: "addLearner", node: "n2", context: "{}" });
  }
  return { node, fatal, dataDir: dataDir! };
}

function envelope(node: ClusterNode, from: string, messages: Partial<Message>[]) {
  return {
    clusterId: node.identity.clusterId,
    from,
    fromUrl: "http://127.0.0.1:2",
    messages: messages.map((m) => ({ from, to: node.id, ...m }) as Message),
  };
}

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "a raft invariant violation inside step() stops the node instead of being dropped",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { node, fatal } = await leadingNode();
  try {
    const term = node.raft.status().term;
    // A garbled message is an ordinary bad message: dropped, the node goes on.
    node.receive(envelope(node, "n2", [{ type: "app", term, index: 1e9, logTerm: 7 }]));
    assertEquals(fatal.length, 0);
    // A "leader" at a newer term commits past our log: our log must have been lost.
    const lastIndex = node.raft.status().lastIndex;
    const err = assertThrows(
      () =>
        node.receive(
          envelope(node, "n2", [{ type: "heartbeat", term: term + 1, commit: lastIndex + 50 }]),
        ),
      UnavailableError,
    );
    assert(/invariant/.test(err.message), err.message);
    assertEquals(fatal.length, 1);
    assert(fatal[0] instanceof RaftInvariantError, String(fatal[0]));
    const applied = node.fsm.appliedIndex();
    assertThrows(() => node.receive(envelope(node, "n2", [])), UnavailableError);
    await delay(100);
    assertEquals(node.fsm.appliedIndex(), applied, "a halted node applies nothing more");
  } finally {
    await node.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "the leader refuses a removed member with 'removed' and never takes its term",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { node, fatal } = await leadingNode();
  try {
    const term = node.raft.status().term;
    const err = assertThrows(
      () =>
        node.receive(envelope(node, "n3", [
          { type: "vote", term: term + 10, index: 1e6, logTerm: term + 9 },
          { type: "appResp", term: term + 10, index: 5 },
        ])),
      NovaError,
    );
    assertEquals((err as NovaError).code, "removed");
    await delay(50);
    const s = node.raft.status();
    assertEquals([s.term, s.role], [term, "leader"]);
    assertEquals(fatal.length, 0);
  } finally {
    await node.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "a state machine that lost applied entries (power loss, synchronous=NORMAL) recovers them",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { node, dataDir } = await leadingNode();
  const describe = (i: number) =>
    node.propose({
      op: "config.patch",
      changes: { "cluster.description": `d${i}` },
      by: "t",
      at: i,
    });
  await node.propose({
    op: "config.patch",
    changes: { "raft.snapshotEntries": 16 },
    by: "t",
    at: 0,
  });
  // What a power loss could leave of state.db: its durable image from back then.
  const old = join(dataDir, "state-at-power-loss.db");
  const reader = new DatabaseSync(join(dataDir, "state.db"));
  reader.exec(`VACUUM INTO '${old}'`);
  reader.close();
  const oldApplied = node.fsm.appliedIndex();
  for (let i = 0; i < 200; i++) await describe(i);
  for (let i = 0; i < 100 && node.log.snapshot().meta.index <= oldApplied; i++) {
    await delay(20);
  }
  const snapIndex = node.log.snapshot().meta.index;
  assert(snapIndex > oldApplied, `the log was compacted past the lost entries (${snapIndex})`);
  const applied = node.fsm.appliedIndex();
  await node.stop();

  for (const f of ["state.db", "state.db-wal", "state.db-shm"]) {
    await Deno.remove(join(dataDir, f)).catch(() => {});
  }
  await Deno.rename(old, join(dataDir, "state.db"));
  const again = await leadingNode(dataDir);
  try {
    await again.node.waitApplied(applied);
    assertEquals(again.node.fsm.config().config["cluster.description"], "d199");
    assertEquals(again.fatal.length, 0);
  } finally {
    await again.node.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "a log of few but large (batched) entries is compacted by its bytes, not only its count",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { node, dataDir } = await leadingNode();
  const initial = node.log.snapshot().meta.index;
  try {
    // 1,200 entries of ~4 KiB: far below raft.snapshotEntries (10,000), above 4 MiB of log.
    const text = "x".repeat(4000);
    for (let i = 0; i < 1_200; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) =>
        node.propose({
          op: "config.patch",
          changes: { "cluster.description": `${i + j}${text}` },
          by: "t",
          at: i + j,
        })));
    }
    for (let i = 0; i < 250 && node.log.snapshot().meta.index === initial; i++) await delay(20);
    const snapIndex = node.log.snapshot().meta.index;
    assert(snapIndex > initial, `the log was compacted (snapshot index ${snapIndex})`);
    assert(
      node.log.bytesAfterSnapshot() < 4 << 20,
      `the log holds ${node.log.bytesAfterSnapshot()} bytes after the snapshot`,
    );
  } finally {
    await node.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
