/**
 * The driver around the Raft core on real SQLite files: what it does with
 * messages that reveal a broken invariant, and with messages from non-members.
 */
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { NovaError, UnavailableError } from "../errors/mod.ts";
import { RaftInvariantError } from "../raft/mod.ts";
import type { Message } from "../raft/types.ts";
import { bootstrapCluster } from "./bootstrap.ts";
import { ClusterNode, delay } from "./node.ts";

/** A bootstrapped one-voter node that leads and has applied an entry of its term. */
async function leadingNode(): Promise<{ node: ClusterNode; fatal: unknown[] }> {
  const dataDir = await Deno.makeTempDir();
  const { identity } = await bootstrapCluster(dataDir, "n1", "http://127.0.0.1:1");
  const fatal: unknown[] = [];
  const node = new ClusterNode({ dataDir, identity, tickMs: 10, onFatal: (e) => fatal.push(e) });
  node.start();
  for (let i = 0; i < 500; i++) {
    const s = node.raft.status();
    if (s.role === "leader" && node.raft.termAt(s.applied) === s.term) break;
    await delay(10);
  }
  assert(node.isLeader(), "the lone voter leads");
  // A learner that never answers: a member whose messages pass the screen.
  await node.changeMembership({ type: "addLearner", node: "n2", context: "{}" });
  return { node, fatal };
}

function envelope(node: ClusterNode, from: string, messages: Partial<Message>[]) {
  return {
    clusterId: node.identity.clusterId,
    from,
    fromUrl: "http://127.0.0.1:2",
    messages: messages.map((m) => ({ from, to: node.id, ...m }) as Message),
  };
}

Deno.test({
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

Deno.test({
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
