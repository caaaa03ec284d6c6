import { MemoryStorage } from "./memory_storage.ts";
import { RaftLog } from "./log.ts";
import {
  ConfChangeError,
  LeadershipTransferError,
  NotLeaderError,
  ProposalDroppedError,
  RaftInvariantError,
} from "./raft.ts";
import { assert, assertEquals, assertThrows, TestNetwork } from "./testing.ts";
import { CompactedError, type Entry, type Message } from "./types.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const isApp = (m: Message) => m.type === "app";

/** Entries with the given terms at indexes 1..n. */
function entries(terms: number[]): Entry[] {
  return terms.map((term, i) => ({
    index: i + 1,
    term,
    type: "normal",
    data: `e${i + 1}t${term}`,
  }));
}

/** Replaces a node's durable log and hard state, then restarts it from them. */
function seedLog(net: TestNetwork, id: string, terms: number[], commit = 0): void {
  const n = net.node(id);
  n.storage.append(entries(terms));
  n.storage.setHardState({ term: terms[terms.length - 1] ?? 0, vote: null, commit });
  n.applied = [];
  net.restart(id, { applied: 0 });
}

function logTerms(net: TestNetwork, id: string): number[] {
  const r = net.raft(id);
  const out: number[] = [];
  for (let i = 1; i <= r.status().lastIndex; i++) out.push(r.termAt(i)!);
  return out;
}

// ---- elections ------------------------------------------------------------------

testWithTimeout({
  name: "election: a campaigning node wins and everyone commits its no-op",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  assertEquals(net.leaders(), ["a"]);
  for (const id of ["a", "b", "c"]) {
    const s = net.raft(id).status();
    assertEquals([s.term, s.lead, s.commit], [1, "a", 1]);
    assertEquals(net.node(id).applied, [{ index: 1, term: 1, type: "normal", data: "" }]);
  }
});

testWithTimeout({
  name: "election: ticking alone elects exactly one leader",
  timeoutMs: 2 * MINUTE,
}, () => {
  for (const preVote of [false, true]) {
    const net = new TestNetwork(["a", "b", "c", "d", "e"], { preVote, checkQuorum: preVote });
    net.tickAll(40);
    assertEquals(net.leaders().length, 1);
  }
});

testWithTimeout({
  name: "election: a candidate with a stale log cannot win",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  net.isolate("c");
  net.raft("a").propose("x");
  net.deliverAll();
  net.heal();
  net.campaign("c");
  assert(net.role("c") !== "leader", "stale candidate must lose");
  assertEquals(net.raft("a").status().term, 2); // the higher-term request still deposed a
  net.tickAll(40);
  const [leader] = net.leaders();
  assert(leader === "a" || leader === "b", `up-to-date node must lead, got ${leader}`);
});

testWithTimeout({
  name: "election: the randomized timeout lies in [electionTicks, 2*electionTicks)",
  timeoutMs: 2 * MINUTE,
}, () => {
  for (let trial = 0; trial < 20; trial++) {
    const net = new TestNetwork(["a", "b", "c"]);
    net.isolate("a");
    let ticks = 0;
    while (net.role("a") === "follower") {
      net.tick(["a"]);
      ticks++;
    }
    assert(ticks >= 10 && ticks < 20, `campaigned after ${ticks} ticks`);
  }
});

// ---- pre-vote and check-quorum ---------------------------------------------------------

testWithTimeout({
  name: "pre-vote: a partitioned node rejoining neither bumps the term nor deposes the leader",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"], { preVote: true });
  net.campaign("a");
  const term = net.raft("a").status().term;
  net.isolate("c");
  net.tick(["c"], 100);
  assertEquals(net.raft("c").status().term, term, "pre-vote must not bump the isolated term");
  for (let i = 0; i < 3; i++) net.raft("a").propose(`w${i}`);
  net.deliverAll();
  net.heal();
  net.tick(["a", "b", "c"], 5);
  assertEquals(net.leaders(), ["a"]);
  assertEquals(net.raft("a").status().term, term);
  assertEquals(net.raft("c").status().lead, "a");
  assertEquals(logTerms(net, "c"), logTerms(net, "a"));
});

testWithTimeout({
  name: "pre-vote (contrast): without it the rejoining node disrupts the cluster",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"], { preVote: false });
  net.campaign("a");
  const term = net.raft("a").status().term;
  net.isolate("c");
  net.tick(["c"], 100);
  assert(net.raft("c").status().term > term + 3, "isolated node bumps its term");
  net.raft("a").propose("w");
  net.deliverAll();
  net.heal();
  net.tick(["a", "b", "c"], 40);
  assert(net.raft("a").status().term > term, "leader's term was bumped by the rejoining node");
  assertEquals(net.leaders().length, 1);
});

testWithTimeout({
  name: "check-quorum: a leader cut off from a quorum steps down within two election timeouts",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"], { checkQuorum: true });
  net.campaign("a");
  net.isolate("a");
  net.tick(["a"], 20);
  assertEquals(net.role("a"), "follower");
  assertEquals(net.raft("a").status().lead, null);
});

testWithTimeout({
  name: "check-quorum: a follower hearing from its leader ignores vote requests unless transfer",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"], { checkQuorum: true });
  net.campaign("a");
  const mark = net.sent.length;
  const vote: Message = { type: "vote", from: "c", to: "b", term: 9, index: 99, logTerm: 9 };
  net.stepAndDeliver(vote);
  assertEquals(net.raft("b").status().term, 1);
  assertEquals(net.sentSince(mark, (m) => m.type === "voteResp").length, 0);
  net.stepAndDeliver({ ...vote, transfer: true });
  assertEquals(net.raft("b").status().term, 9);
  assertEquals(net.raft("b").status().vote, "c");
});

// ---- replication ------------------------------------------------------------------------

testWithTimeout({
  name: "replication: conflicting suffixes are replaced with few round trips (fast back-off)",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  seedLog(net, "a", [1, 1, 1, 4, 4, 5, 5, 6, 6, 6], 3);
  seedLog(net, "b", [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3);
  seedLog(net, "c", [1, 1, 1, 4], 3);
  const mark = net.sent.length;
  net.campaign("a");
  assertEquals(net.leaders(), ["a"]);
  const expected = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7];
  assertEquals(logTerms(net, "b"), expected);
  assertEquals(logTerms(net, "c"), expected);
  assertEquals(net.node("b").storage.allEntries().map((e) => e.term), expected);
  // One rejection each: b skips its whole terms 3 and 2 at once, c's short log is skipped too.
  for (const id of ["b", "c"]) {
    const rejects = net.sentSince(mark, (m) => m.type === "appResp" && m.from === id && !!m.reject);
    assertEquals(rejects.length, 1, `rejections from ${id}`);
  }
  assertEquals(net.raft("b").status().commit, 11);
});

testWithTimeout({
  name: "commit rule: entries of an older term are not committed by counting replicas",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"], { maxMsgBytes: 1 });
  seedLog(net, "a", [1, 2], 1);
  seedLog(net, "b", [1], 1);
  seedLog(net, "c", [1], 1);
  // Hold back the new leader's own no-op (index 3) so only entry 2 (term 2) replicates. The
  // first append of each follower is let through: it is rejected (they lack entry 2) anyway.
  const probed = new Set<string>();
  net.dropIf = (m) => {
    if (!isApp(m) || !m.entries?.some((e) => e.index === 3)) return false;
    if (!probed.has(m.to)) {
      probed.add(m.to);
      return false;
    }
    return true;
  };
  net.campaign("a");
  assertEquals(net.raft("a").status().term, 3);
  assertEquals(net.raft("b").termAt(2), 2);
  assertEquals(net.raft("c").termAt(2), 2);
  assertEquals(
    net.raft("a").status().commit,
    1,
    "a term-2 entry on all nodes is still uncommitted",
  );
  net.heal();
  net.tick(["a"]);
  assertEquals(net.raft("a").status().commit, 3);
  assertEquals(net.node("b").applied.map((e) => e.index), [1, 2, 3]);
});

testWithTimeout({
  name: "pipelining: at most maxInflight appends are outstanding per follower",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b"], { maxInflight: 2, maxMsgBytes: 40 });
  net.campaign("a");
  net.dropIf = (m) => m.type === "appResp";
  const mark = net.sent.length;
  for (let i = 0; i < 10; i++) net.raft("a").propose(`p${i}`);
  net.deliverAll();
  const apps = net.sentSince(mark, (m) => isApp(m) && m.to === "b");
  assertEquals(apps.length, 2);
  assertEquals(apps.map((m) => m.entries!.length), [1, 1]);
  net.heal();
  net.tick(["a"]);
  assertEquals(net.raft("b").status().commit, 11);
});

testWithTimeout({
  name: "batching: 100 proposals are persisted as one batch and sent as one append per follower",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  const leader = net.node("a");
  const first = leader.readies.length;
  const indexes = [];
  for (let i = 0; i < 100; i++) indexes.push(leader.raft.propose(`p${i}`));
  assertEquals(indexes[0], 2);
  assertEquals(indexes[99], 101);
  net.deliverAll();
  const rd = leader.readies[first];
  assertEquals(rd.entries.length, 100);
  const apps = rd.messages.filter(isApp);
  assertEquals(apps.map((m) => [m.to, m.entries!.length]), [["b", 100], ["c", 100]]);
  for (const id of ["b", "c"]) {
    const persisted = net.node(id).readies.filter((r) => r.entries.length > 0);
    assertEquals(persisted.map((r) => r.entries.length), [1, 100]); // no-op, then the batch
  }
  assertEquals(net.raft("c").status().commit, 101);
});

testWithTimeout({
  name: "uncommitted cap: a leader refuses proposals beyond maxUncommittedBytes until they commit",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"], { maxUncommittedBytes: 100 });
  net.campaign("a");
  const leader = net.raft("a");
  net.isolate("a"); // nothing commits while the followers are cut off
  const lastBefore = leader.status().lastIndex;
  for (let i = 0; i < 4; i++) leader.propose("x".repeat(25)); // exactly 100 bytes
  assertThrows(() => leader.propose("y"), ProposalDroppedError, /100 uncommitted bytes.*limit 100/);
  assertEquals(leader.status().lastIndex, lastBefore + 4, "a dropped proposal appends nothing");
  assertEquals(leader.status().uncommittedBytes, 100);
  net.heal();
  net.tick(["a"]);
  assertEquals(leader.status().commit, lastBefore + 4);
  assertEquals(leader.status().uncommittedBytes, 0, "committing releases the budget");
  leader.propose("y");
});

testWithTimeout({
  name: "uncommitted cap: one entry larger than the cap fits when nothing is pending",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b"], { maxUncommittedBytes: 10 });
  net.campaign("a");
  net.isolate("a");
  net.raft("a").propose("z".repeat(50));
  assertThrows(() => net.raft("a").propose("z"), ProposalDroppedError);
});

// ---- ReadIndex ----------------------------------------------------------------------------

testWithTimeout({
  name: "readIndex: a read is released once a quorum confirms leadership",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  net.raft("a").propose("x");
  net.deliverAll();
  net.dropIf = (m) => m.type === "heartbeatResp";
  const mark = net.sent.length;
  net.raft("a").readIndex("r1");
  net.deliverAll();
  assertEquals(net.sentSince(mark, (m) => m.type === "heartbeat" && m.context === "r1").length, 2);
  assertEquals(net.node("a").readStates, []);
  net.heal();
  net.tick(["a"]); // the next heartbeat round re-carries the pending context
  assertEquals(net.node("a").readStates, [{ index: 2, context: "r1" }]);
});

testWithTimeout({
  name: "heartbeats: learners get them every learnerHeartbeatTicks, read rounds go to voters only",
  timeoutMs: 2 * MINUTE,
}, () => {
  // a, b, c vote; l1, l2 are learners (hosts), heartbeated every 10 ticks instead of every 2.
  const net = new TestNetwork(["a", "b", "c"], { heartbeatTicks: 2, learnerHeartbeatTicks: 10 }, [
    "l1",
    "l2",
  ]);
  net.campaign("a");
  net.raft("a").propose("x");
  net.deliverAll();
  const heartbeatsTo = (mark: number, ids: string[]) =>
    net.sentSince(mark, (m) => m.type === "heartbeat" && ids.includes(m.to)).length;
  let mark = net.sent.length;
  for (let i = 0; i < 20; i++) {
    net.tick(["a"]);
    net.deliverAll();
  }
  assertEquals(heartbeatsTo(mark, ["b", "c"]), 20); // every 2 ticks, 2 voters
  assertEquals(heartbeatsTo(mark, ["l1", "l2"]), 4); // every 10 ticks, 2 learners
  // Learners still get every entry and commit at once: they learn commits from appends.
  net.raft("a").propose("y");
  net.deliverAll();
  for (const id of ["l1", "l2"]) assertEquals(net.raft(id).status().commit, 3);
  mark = net.sent.length;
  net.raft("a").readIndex("r1");
  net.deliverAll();
  assertEquals(net.node("a").readStates, [{ index: 3, context: "r1" }]);
  assertEquals(heartbeatsTo(mark, ["b", "c"]), 2);
  assertEquals(heartbeatsTo(mark, ["l1", "l2"]), 0);
});

testWithTimeout({
  name: "readIndex: a new leader defers reads until it commits in its term",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.dropIf = (m) => m.type === "appResp";
  net.campaign("a");
  assertEquals(net.raft("a").status().commit, 0);
  const mark = net.sent.length;
  net.raft("a").readIndex("r2");
  net.deliverAll();
  assertEquals(net.sentSince(mark, (m) => m.context === "r2").length, 0);
  net.heal();
  net.tick(["a"]);
  assertEquals(net.node("a").readStates, [{ index: 1, context: "r2" }]);
});

testWithTimeout({
  name: "readIndex: a single voter answers at once; followers refuse",
  timeoutMs: 2 * MINUTE,
}, () => {
  const solo = new TestNetwork(["a"]);
  solo.campaign("a");
  solo.raft("a").readIndex("s");
  solo.deliverAll();
  assertEquals(solo.node("a").readStates, [{ index: 1, context: "s" }]);

  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  const err = assertThrows(() => net.raft("b").readIndex("x"), NotLeaderError) as NotLeaderError;
  assertEquals(err.leader, "a");
});

testWithTimeout({
  name: "readIndex: pending reads are dropped when leadership is lost",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  net.dropIf = (m) => m.type === "heartbeatResp";
  net.raft("a").readIndex("r3");
  net.deliverAll();
  net.stepAndDeliver({ type: "heartbeat", from: "b", to: "a", term: 5, commit: 0 });
  assertEquals(net.role("a"), "follower");
  assertEquals(net.node("a").droppedReads, ["r3"]);
  assertEquals(net.node("a").readStates, []);
});

// ---- learners and membership ---------------------------------------------------------------

testWithTimeout({
  name: "learners: replicate but never vote, campaign or count towards quorum",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b"], {}, ["d"]);
  net.campaign("a");
  net.raft("a").propose("x");
  net.deliverAll();
  assertEquals(net.node("d").applied.map((e) => e.data), ["", "x"]);
  net.isolate("b");
  net.raft("a").propose("y");
  net.deliverAll();
  assertEquals(net.raft("d").status().lastIndex, 3, "learner received the entry");
  // The cheap accessors the hot paths use agree with the full status.
  assertEquals(net.raft("a").basicStatus().lastIndex, net.raft("a").status().lastIndex);
  assert(net.raft("a").isMember("d") && net.raft("a").isMember("b"), "voters and learners");
  assert(!net.raft("a").isMember("z"), "a stranger is no member");
  assertEquals(net.raft("a").status().commit, 2, "a learner's ack does not make a quorum");
  net.isolate("a");
  const term = net.raft("d").status().term;
  net.raft("d").campaign();
  net.tick(["d"], 100);
  assertEquals(net.role("d"), "follower");
  assertEquals(net.raft("d").status().term, term);
});

testWithTimeout({
  name: "conf change: one at a time, validated, applied by everyone when committed",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  // d knows the bootstrap membership (a real joiner gets it from a snapshot) but is not in it.
  net.add("d", { voters: ["a", "b", "c"], learners: [] });
  net.campaign("a");
  const a = net.raft("a");
  assertThrows(() => a.proposeConfChange({ type: "promote", node: "b" }), ConfChangeError);
  assertThrows(() => a.proposeConfChange({ type: "remove", node: "zz" }), ConfChangeError);
  assertThrows(() => a.proposeConfChange({ type: "addLearner", node: "c" }), ConfChangeError);
  assertThrows(
    () => net.raft("b").proposeConfChange({ type: "addLearner", node: "d" }),
    NotLeaderError,
  );
  a.proposeConfChange({ type: "addLearner", node: "d" });
  assertThrows(
    () => a.proposeConfChange({ type: "promote", node: "d" }),
    ConfChangeError,
    /pending/,
  );
  net.deliverAll();
  for (const id of ["a", "b", "c", "d"]) {
    assertEquals(net.raft(id).status().conf, { voters: ["a", "b", "c"], learners: ["d"] }, id);
  }
  // A committed-but-unknown change is not applied early: b holds the entry but not its commit.
  net.dropIf = (m) => m.type === "appResp";
  a.proposeConfChange({ type: "promote", node: "d" });
  net.deliverAll();
  assertEquals(net.raft("b").status().conf.learners, ["d"]);
  net.heal();
  net.tick(["a"]);
  for (const id of ["a", "b", "c", "d"]) {
    assertEquals(net.raft(id).status().conf, { voters: ["a", "b", "c", "d"], learners: [] }, id);
  }
});

testWithTimeout({
  name: "conf change: refused until the leader commits an entry in its term",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.dropIf = (m) => m.type === "appResp";
  net.campaign("a");
  assertThrows(
    () => net.raft("a").proposeConfChange({ type: "remove", node: "c" }),
    ConfChangeError,
    /current term/,
  );
});

testWithTimeout({
  name: "conf change: a removed leader steps down after committing its removal",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  net.raft("a").proposeConfChange({ type: "remove", node: "a" });
  net.deliverAll();
  assertEquals(net.role("a"), "follower");
  assertEquals(net.raft("b").status().conf.voters, ["b", "c"]);
  net.tickAll(40);
  const [leader] = net.leaders();
  assert(leader === "b" || leader === "c", `a remaining voter leads, got ${leader}`);
  assertEquals(net.role("a"), "follower");
  net.raft(leader).propose("after");
  net.deliverAll();
  assertEquals(net.node("b").applied.at(-1)!.data, "after");
});

// ---- leadership transfer ----------------------------------------------------------------------

testWithTimeout({
  name: "transfer: the target takes over at once, even with check-quorum stickiness",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"], { checkQuorum: true, preVote: true });
  net.campaign("a");
  const term = net.raft("a").status().term;
  net.raft("a").transferLeadership("b");
  assertThrows(() => net.raft("a").propose("x"), NotLeaderError, /transferred/);
  net.deliverAll();
  assertEquals(net.leaders(), ["b"]);
  assertEquals(net.raft("b").status().term, term + 1);
  assertThrows(() => net.raft("a").transferLeadership("c"), NotLeaderError);
  assertThrows(() => net.raft("b").transferLeadership("zz"), LeadershipTransferError);
});

testWithTimeout(
  { name: "transfer: a lagging target is caught up first", timeoutMs: 2 * MINUTE },
  () => {
    const net = new TestNetwork(["a", "b", "c"]);
    net.campaign("a");
    net.isolate("c");
    for (let i = 0; i < 5; i++) net.raft("a").propose(`w${i}`);
    net.deliverAll();
    net.heal();
    net.raft("a").transferLeadership("c");
    net.deliverAll();
    assertEquals(net.leaders(), ["c"]);
    assertEquals(net.raft("c").termAt(6), 1);
  },
);

testWithTimeout({
  name: "transfer: aborted after an election timeout, then proposals resume",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  net.isolate("c");
  net.raft("a").transferLeadership("c");
  net.deliverAll();
  assertEquals(net.raft("a").status().transferee, "c");
  net.tick(["a"], 10);
  assertEquals(net.raft("a").status().transferee, null);
  assertEquals(net.raft("a").propose("x"), 2);
});

// ---- snapshots and restarts ---------------------------------------------------------------------

testWithTimeout({
  name: "snapshot: a follower behind the compacted log is caught up by InstallSnapshot",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  net.isolate("c");
  for (let i = 0; i < 10; i++) net.raft("a").propose(`w${i}`);
  net.deliverAll();
  for (const id of ["a", "b"]) {
    const n = net.node(id);
    n.storage.createSnapshot(11, { voters: ["a", "b", "c"], learners: [] }, "state@11");
    n.storage.compact(11);
  }
  net.heal();
  net.tick(["a"], 3);
  const c = net.node("c");
  assertEquals(c.storage.snapshot().meta.index, 11);
  assertEquals(c.storage.snapshot().data, "state@11");
  assert(c.readies.some((r) => r.snapshot !== null), "c received a snapshot in a Ready");
  net.raft("a").propose("after");
  net.deliverAll();
  assertEquals(c.applied.at(-1), { index: 12, term: 1, type: "normal", data: "after" });
  assertEquals(c.raft.status().commit, 12);
});

testWithTimeout({
  name: "snapshot: a follower ignores a snapshot not newer than its commit index",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  net.raft("a").propose("x");
  net.deliverAll();
  const mark = net.sent.length;
  const snapshot = { meta: { index: 1, term: 1, conf: { voters: ["a"], learners: [] } }, data: "" };
  net.stepAndDeliver({ type: "snap", from: "a", to: "b", term: 1, snapshot });
  assertEquals(net.node("b").storage.snapshot().meta.index, 0);
  assertEquals(net.raft("b").status().conf.voters, ["a", "b", "c"]);
  const [resp] = net.sentSince(mark, (m) => m.type === "appResp" && m.from === "b");
  assertEquals(resp.index, 2);
});

testWithTimeout({
  name: "restart: committed but unapplied entries are handed out again",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  for (let i = 0; i < 3; i++) net.raft("a").propose(`w${i}`);
  net.deliverAll();
  const b = net.node("b");
  b.applied = [];
  net.restart("b", { applied: 2 });
  net.processReadies();
  assertEquals(b.applied.map((e) => e.index), [3, 4]);
  assertEquals(b.raft.status().term, 1);
});

testWithTimeout({
  name: "ready: a second ready() before advance() is a driver bug",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a"]);
  net.raft("a").campaign();
  net.raft("a").ready();
  assertThrows(() => net.raft("a").ready(), Error, /advance/);
});

// ---- persistence contract -------------------------------------------------------------------------

testWithTimeout({
  name: "persistence: acks travel in the same Ready as the state they acknowledge",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  const b = net.raft("b");
  b.step({
    type: "app",
    from: "a",
    to: "b",
    term: 1,
    index: 1,
    logTerm: 1,
    commit: 1,
    entries: [{ index: 2, term: 1, type: "normal", data: "x" }],
  });
  let rd = b.ready();
  assertEquals(rd.entries.map((e) => e.index), [2]);
  assertEquals(rd.messages.map((m) => [m.type, m.index]), [["appResp", 2]]);
  b.advance(rd);
  b.step({ type: "vote", from: "c", to: "b", term: 2, index: 2, logTerm: 1 });
  rd = b.ready();
  assertEquals(rd.hardState, { term: 2, vote: "c", commit: 1 });
  assertEquals(rd.messages.map((m) => [m.type, m.reject]), [["voteResp", false]]);
});

testWithTimeout({
  name: "persistence: a crash loses unpersisted entries; persisted state is restored",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  const a = net.node("a");
  a.raft.propose("durable");
  net.deliverAll();
  a.raft.propose("lost"); // appended in memory only: no ready() before the crash
  net.restart("a");
  const s = a.raft.status();
  assertEquals([s.term, s.vote, s.commit, s.lastIndex, s.role], [1, "a", 2, 2, "follower"]);
  assertEquals(a.storage.allEntries().map((e) => e.data), ["", "durable"]);
});

testWithTimeout({
  name: "progress: unreachable followers are probed; snapshot reports resume probing",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  net.campaign("a");
  const a = net.raft("a");
  assertEquals(a.status().progress.b.state, "replicate");
  a.reportUnreachable("b");
  assertEquals(a.status().progress.b.state, "probe");
  // Compact past b's match so that b needs a snapshot, then lose it.
  net.isolate("b");
  for (let i = 0; i < 3; i++) a.propose(`w${i}`);
  net.deliverAll();
  net.node("a").storage.createSnapshot(4, { voters: ["a", "b", "c"], learners: [] }, "s");
  net.node("a").storage.compact(4);
  net.heal();
  net.dropIf = (m) => m.type === "snap";
  net.tick(["a"]);
  assertEquals(a.status().progress.b.state, "snapshot");
  a.reportSnapshot("b", false);
  assertEquals(a.status().progress.b.state, "probe");
  net.heal();
  net.tick(["a"], 2);
  assertEquals(net.raft("b").status().commit, 4);
  assertEquals(a.status().progress.b.state, "replicate");
});

// ---- MemoryStorage -------------------------------------------------------------------------------

testWithTimeout({
  name: "MemoryStorage: append truncates, compaction keeps the base term, snapshots replace",
  timeoutMs: 2 * MINUTE,
}, () => {
  const s = new MemoryStorage({ voters: ["a"], learners: [] });
  s.append(entries([1, 1, 2, 2]));
  s.append([{ index: 3, term: 3, type: "normal", data: "new" }]);
  assertEquals(s.allEntries().map((e) => e.term), [1, 1, 3]);
  assertThrows(() => s.append([{ index: 9, term: 3, type: "normal", data: "" }]), RangeError);
  assertThrows(() => s.compact(2), Error, /snapshot/);
  s.createSnapshot(2, { voters: ["a"], learners: [] }, "sm@2");
  s.compact(2);
  assertEquals([s.firstIndex(), s.lastIndex(), s.term(2)], [3, 3, 1]);
  assertThrows(() => s.term(1), CompactedError);
  assertThrows(() => s.entries(2, 4), CompactedError);
  s.applySnapshot({
    meta: { index: 10, term: 4, conf: { voters: ["a"], learners: [] } },
    data: "x",
  });
  assertEquals([s.firstIndex(), s.lastIndex(), s.term(10)], [11, 10, 4]);
  s.confAtApplied = () => ({ voters: ["a", "b"], learners: [] });
  assertEquals(s.initialState().conf.voters, ["a", "b"]);
});

// ---- invariants -------------------------------------------------------------------

testWithTimeout({
  name: "invariant: entries conflicting with the committed prefix throw RaftInvariantError",
  timeoutMs: 2 * MINUTE,
}, () => {
  // The core answers an append below its commit index without reading it, so the
  // check guards the log itself (storage that lost or changed committed entries).
  const storage = new MemoryStorage();
  storage.append(entries([1, 1, 1]));
  const log = new RaftLog(storage, 3, 0);
  assertThrows(
    () => log.maybeAppend(1, 1, 3, [{ index: 2, term: 2, type: "normal", data: "rewritten" }]),
    RaftInvariantError,
    /committed prefix/,
  );
});

testWithTimeout({
  name:
    "invariant: a leader committing past our log (log lost) throws RaftInvariantError from step()",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  seedLog(net, "b", [1, 1], 1);
  // The leader believes b holds 5 entries (it acknowledged them before losing them).
  assertThrows(
    () => net.raft("b").step({ type: "heartbeat", from: "c", to: "b", term: 1, commit: 5 }),
    RaftInvariantError,
    /log lost/,
  );
});

testWithTimeout({
  name: "invariant: a commit index beyond the stored log (log lost) throws RaftInvariantError",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a"]);
  const n = net.node("a");
  n.storage.append(entries([1, 1]));
  n.storage.setHardState({ term: 1, vote: null, commit: 5 });
  assertThrows(() => net.restart("a", { applied: 0 }), RaftInvariantError);
});

testWithTimeout({
  name: "invariant: an ordinary stale or mismatched message is not an invariant violation",
  timeoutMs: 2 * MINUTE,
}, () => {
  const net = new TestNetwork(["a", "b", "c"]);
  seedLog(net, "b", [1, 1, 1], 3);
  // A leader probing at an index we do not have gets a rejection, not an exception.
  net.raft("b").step({
    type: "app",
    from: "c",
    to: "b",
    term: 2,
    index: 9,
    logTerm: 2,
    entries: [],
    commit: 3,
  });
  assertEquals(net.raft("b").status().commit, 3);
});
