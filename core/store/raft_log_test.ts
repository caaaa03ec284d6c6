import { SqliteRaftLog } from "./raft_log.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { CompactedError, type Entry } from "../raft/types.ts";
import { join } from "node:path";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const e = (index: number, term: number, data = `d${index}`): Entry => ({
  index,
  term,
  type: "normal",
  data,
});

async function tempLog(): Promise<{ path: string; log: SqliteRaftLog }> {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "raft.db");
  return { path, log: new SqliteRaftLog(path) };
}

testWithTimeout({
  name: "raft log persists entries and hard state across reopen",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { path, log } = await tempLog();
  await log.save({
    snapshot: null,
    entries: [e(1, 1), e(2, 1), e(3, 2)],
    hardState: { term: 2, vote: "n1", commit: 2 },
  });
  await log.close();
  const again = new SqliteRaftLog(path);
  assertEquals(again.lastIndex(), 3);
  assertEquals(again.term(3), 2);
  assertEquals(again.initialState().hardState, { term: 2, vote: "n1", commit: 2 });
  assertEquals(again.entries(2, 4).map((x) => x.data), ["d2", "d3"]);
  await again.close();
});

testWithTimeout(
  { name: "raft log truncates a conflicting suffix", timeoutMs: 2 * MINUTE },
  async () => {
    const { path, log } = await tempLog();
    await log.save({ snapshot: null, entries: [e(1, 1), e(2, 1), e(3, 1)], hardState: null });
    await log.save({ snapshot: null, entries: [e(2, 3, "new")], hardState: null });
    assertEquals(log.lastIndex(), 2);
    await log.close();
    const again = new SqliteRaftLog(path);
    assertEquals(again.lastIndex(), 2);
    assertEquals(again.entries(1, 3).map((x) => x.data), ["d1", "new"]);
    await again.close();
  },
);

testWithTimeout({
  name: "compaction keeps the snapshot and drops covered entries",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { path, log } = await tempLog();
  await log.save({
    snapshot: null,
    entries: [e(1, 1), e(2, 1), e(3, 2), e(4, 2)],
    hardState: null,
  });
  const tmp = log.tempSnapshotPath();
  await Deno.writeTextFile(tmp, "state@3");
  await log.compact(3, { voters: ["a"], learners: [] }, tmp, 7);
  assertEquals(log.firstIndex(), 4);
  assertEquals(log.term(3), 2);
  assertThrows(() => log.term(2), CompactedError);
  await log.close();
  const again = new SqliteRaftLog(path);
  assertEquals(again.snapshot().data, "", "snapshot data stays on disk");
  assertEquals(await Deno.readTextFile(again.snapshot().file!), "state@3");
  assertEquals(again.snapshotBytes(), 7);
  assertEquals(again.firstIndex(), 4);
  assertEquals(again.lastIndex(), 4);
  await again.close();
});

testWithTimeout({
  name: "an installed snapshot newer than the log replaces it",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { log } = await tempLog();
  await log.save({ snapshot: null, entries: [e(1, 1), e(2, 1)], hardState: null });
  await log.save({
    snapshot: {
      meta: { index: 10, term: 3, conf: { voters: ["a", "b"], learners: [] } },
      data: "s",
    },
    entries: [],
    hardState: { term: 3, vote: null, commit: 10 },
  });
  assertEquals(log.firstIndex(), 11);
  assertEquals(log.lastIndex(), 10);
  assertEquals(log.initialState().conf.voters, ["a", "b"]);
  await log.close();
});
