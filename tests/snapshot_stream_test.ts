/**
 * Real multi-process cluster: a follower that fell behind a compaction
 * catches up through a snapshot streamed in many chunks (the chunk size is
 * lowered to 4 KiB so the state, 0.5 to 1.5 MB depending on where the leader's
 * last compaction fell, needs over a hundred), received into a temporary file
 * and restored from it, never held whole in one message.
 */
import { clusterFetch } from "../bench/lib/tls.ts";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, eventually, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

// Compactions wait until the log holds as many bytes as the last snapshot, so the one the
// follower gets may be from half-way through the writes (with the event log's rows, it was).
const CHUNK = 4096;

interface Status {
  leader: string | null;
  appliedIndex: number;
  commitIndex: number;
  snapshotIndex: number;
}

/** A counter's value from Prometheus text, 0 when absent. */
async function counter(url: string, name: string, labels: string): Promise<number> {
  const text = await (await clusterFetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

/** What a node's state machine holds, read from its SQLite file (WAL readers don't block it). */
function configRows(dataDir: string): { n: number; newest: number; bytes: number } {
  const db = new DatabaseSync(join(dataDir, "state.db"), { readOnly: true });
  try {
    return db.prepare(
      "SELECT COUNT(*) AS n, MAX(version) AS newest, SUM(LENGTH(data)) AS bytes FROM config_versions",
    ).get() as { n: number; newest: number; bytes: number };
  } finally {
    db.close();
  }
}

testWithTimeout({
  name: "a lagging follower catches up through a multi-chunk streamed snapshot",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster({ env: { NOVACTL_SNAPSHOT_CHUNK_BYTES: String(CHUNK) } });
  await cluster.start(3);
  const token = cluster.adminToken;
  const local = async (name: string) =>
    (await api<Status>(`${cluster.node(name).url}/api/v1/cluster?local=true`, { token })).body;
  const put = async (url: string, key: string, value: unknown) => {
    const r = await api(`${url}/api/v1/config/${key}`, { method: "PUT", token, body: { value } });
    assertEquals(r.status, 200, JSON.stringify(r.body));
  };
  const bulk = "x".repeat(4000);

  try {
    const leader = await cluster.leaderName();
    const leaderUrl = cluster.node(leader).url;
    const follower = cluster.nodes.find((n) => n.name !== leader)!.name;
    let appliedBeforeKill = 0;

    await step(t, "keep every config version and compact often", async () => {
      await put(leaderUrl, "config.keepVersions", 100_000);
      await put(leaderUrl, "raft.snapshotEntries", 16);
    });

    await step(t, "a follower is killed and the state grows far past the chunk size", async () => {
      appliedBeforeKill = (await local(follower)).appliedIndex;
      await cluster.kill(follower, "SIGKILL");
      for (let i = 0; i < 250; i++) await put(leaderUrl, "cluster.description", `${bulk}${i}`);
      const rows = configRows(cluster.node(leader).dataDir);
      assert(rows.bytes > 100 * CHUNK, `state holds ${rows.bytes} bytes of config versions`);
      const view = await eventually("the leader to compact past the follower", async () => {
        const s = await local(leader);
        return s.snapshotIndex > appliedBeforeKill ? s : undefined;
      });
      console.log(`leader snapshot at ${view.snapshotIndex}, follower had ${appliedBeforeKill}`);
    });

    await step(t, "the restarted follower installs the snapshot from many chunks", async () => {
      const sentBefore = await counter(
        leaderUrl,
        "novactl_raft_snapshot_chunks_total",
        'direction="sent"',
      );
      await cluster.restart(follower);
      const target = (await local(leader)).commitIndex;
      const caught = await eventually(`${follower} to apply ${target}`, async () => {
        const s = await local(follower);
        return s.appliedIndex >= target ? s : undefined;
      }, 60_000);
      assert(caught.snapshotIndex > appliedBeforeKill, "the follower installed a snapshot");
      const followerUrl = cluster.node(follower).url;
      const received = await counter(
        followerUrl,
        "novactl_raft_snapshot_chunks_total",
        'direction="received"',
      );
      const sent =
        await counter(leaderUrl, "novactl_raft_snapshot_chunks_total", 'direction="sent"') -
        sentBefore;
      const snapDir = join(cluster.node(follower).dataDir, "snapshots");
      const files = [...Deno.readDirSync(snapDir)].map((f) => f.name);
      // The newest snapshot file (snap-TERM-INDEX.snap): an older one may linger until the log
      // removes it.
      const indexOf = (f: string) => Number(/^snap-\d+-(\d+)\.snap$/.exec(f)?.[1] ?? -1);
      const snapFile = files.filter((f) =>
        indexOf(f) >= 0
      ).sort((a, b) => indexOf(b) - indexOf(a))[0];
      const size = Deno.statSync(join(snapDir, snapFile)).size;
      console.log(`snapshot of ${size} bytes received in ${received} chunks (leader sent ${sent})`);
      assert(size > 100 * CHUNK, `snapshot file ${snapFile} has ${size} bytes (files: ${files})`);
      assert(received >= Math.ceil(size / CHUNK), `received ${received} chunks of ${CHUNK} bytes`);
      assert(sent >= received, "every received chunk was a separate request from the leader");
      assertEquals(
        files.filter((f) => !f.startsWith("snap-")),
        [],
        "temp files were moved or removed",
      );
    });

    await step(t, "the follower's state machine equals the leader's", async () => {
      await put(leaderUrl, "cluster.description", "final");
      const target = (await local(leader)).commitIndex;
      await eventually("the follower to apply the last write", async () => {
        return (await local(follower)).appliedIndex >= target;
      });
      const mine = configRows(cluster.node(follower).dataDir);
      const theirs = configRows(cluster.node(leader).dataDir);
      assertEquals(mine, theirs);
      assert(!cluster.node(follower).process!.exited, "the follower is still running");
      await cluster.stopNode(follower); // its log is complete once it has exited
      const logText = await Deno.readTextFile(cluster.node(follower).logPath);
      const failure = /Uncaught.*|"msg":"(fatal error in raft loop|snapshot failed)".*/.exec(
        logText,
      );
      assert(!failure, `the follower logged: ${failure?.[0]}`);
      const restored = logText.split("\n").filter((l) => l.includes('"msg":"snapshot restored"'))
        .map((l) => JSON.parse(l)).find((l) => l.index > appliedBeforeKill);
      assert(restored, "the follower restored the streamed snapshot");
      console.log(
        `follower restored index ${restored.index} (${restored.bytes} B) in ${restored.ms} ms`,
      );
    });
  } finally {
    await cluster.stop();
  }
});
