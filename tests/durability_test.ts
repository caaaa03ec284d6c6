/**
 * Durability and readiness on real processes:
 * - a removed member that never learned of its removal is refused by the
 *   leader (410) and shuts down, and its newer terms never reach the cluster;
 * - a node that applies a committed entry on a broken disk stops (fail-stop)
 *   instead of recording a different outcome than its peers;
 * - on a fresh node, `/readyz` answers 200 only once a VM can be placed on it.
 */
import { clusterFetch, fetchAsNode, trustClusterCa } from "../bench/lib/tls.ts";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { NovactlCluster, qemuPidsIn } from "../bench/lib/novactl_cluster.ts";
import { LOOPBACK } from "../bench/lib/util.ts";
import { ManagedProcess } from "../bench/lib/process.ts";
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, sleep, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Status {
  leader: string | null;
  term: number;
  appliedIndex: number;
  members: { name: string; role: string }[];
}

/**
 * The longest a follower waits before it campaigns: ClusterNode's tick (50 ms) × election
 * ticks (10), randomized up to twice that (core/cluster/node.ts, core/raft/raft.ts).
 */
const MAX_ELECTION_TIMEOUT_MS = 2 * 10 * 50;

const identityOf = async (dataDir: string) =>
  JSON.parse(await Deno.readTextFile(join(dataDir, "node.json"))) as {
    clusterId: string;
    url: string;
  };

testWithTimeout({
  name: "a removed member is refused with 410, shuts down, and never changes the cluster's term",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster({
    env: { NOVACTL_ACCEL: "tcg", NOVACTL_FAULT_INJECTION: "1" },
  });
  await cluster.start(3);
  const token = cluster.adminToken;
  const local = async (name: string) =>
    (await api<Status>(`${cluster.node(name).url}/api/v1/cluster?local=true`, { token })).body;
  try {
    const leader = await cluster.leaderName();
    const [victim, follower] = ["n1", "n2", "n3"].filter((n) => n !== leader);
    const id = await identityOf(cluster.node(victim).dataDir);
    // Each node accepts fault injection from itself (its own certificate).
    const setBlocked = (name: string, blocked: string[]) =>
      fetchAsNode(cluster.node(name).dataDir, `${cluster.node(name).url}/internal/faults`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ blocked }),
      }).then((r) => r.body?.cancel());
    /** What the removed node could send: a message of `term`, straight to a peer's Raft route. */
    const sendAsVictim = async (to: string, term: number) => {
      // With the victim's own (now revoked) certificate.
      const res = await fetchAsNode(
        cluster.node(victim).dataDir,
        `${cluster.node(to).url}/internal/raft`,
        {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            clusterId: id.clusterId,
            from: victim,
            fromUrl: id.url,
            messages: [
              { type: "vote", from: victim, to, term, index: 1e9, logTerm: term },
              { type: "heartbeatResp", from: victim, to, term },
              { type: "app", from: victim, to, term, index: 0, logTerm: 0, entries: [], commit: 0 },
            ],
          }),
        },
      );
      await res.body?.cancel();
      return res.status;
    };

    let term = 0;
    await step(
      t,
      `partition ${victim}, then remove it: it never hears of its removal`,
      async () => {
        await setBlocked(victim, [leader, follower]);
        await setBlocked(leader, [victim]);
        await setBlocked(follower, [victim]);
        const r = await cli([
          "cluster",
          "remove",
          victim,
          "--server",
          cluster.node(leader).url,
          "--token",
          token,
        ]);
        assertEquals(r.code, 0, r.stderr);
        const s = await local(leader);
        assert(!s.members.some((m) => m.name === victim), "removed from members");
        term = s.term;
        assert(
          (await local(victim)).members.some((m) => m.name === victim),
          "it still thinks it is a member",
        );
      },
    );

    await step(
      t,
      "its newer-term messages: the leader and the follower answer 410 (its certificate is revoked)",
      async () => {
        // The others listen to it again; it still cannot send on its own (its side is cut).
        await setBlocked(leader, []);
        await setBlocked(follower, []);
        assertEquals(await sendAsVictim(leader, term + 10), 410);
        // The follower applied the removal, so it knows the certificate is revoked too.
        // (Until it has, its non-member screen drops the newer-term messages: 200.)
        await eventually(
          "the follower refuses the revoked certificate",
          async () => (await sendAsVictim(follower, term + 10)) === 410,
        );
        // Long enough for a follower that wrongly took the term to campaign with it.
        await sleep(MAX_ELECTION_TIMEOUT_MS);
        for (const n of [leader, follower]) {
          const s = await local(n);
          assertEquals([s.term, s.leader], [term, leader], `${n} kept the term and the leader`);
        }
      },
    );

    await step(t, "healed, it campaigns, gets 410 from the leader and shuts down", async () => {
      await setBlocked(victim, []);
      const exited = await Promise.race([
        cluster.node(victim).process!.status,
        sleep(30_000).then(() => null),
      ]);
      assert(exited !== null, `${victim} exits on its own`);
      const again = await identityOf(cluster.node(victim).dataDir) as { removedAt?: string };
      assert(again.removedAt, "it recorded its removal and will refuse to start again");
      for (const n of [leader, follower]) {
        const s = await local(n);
        assertEquals([s.term, s.leader], [term, leader], `${n}: term and leader unchanged`);
      }
    });
  } catch (err) {
    console.log(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
  }
});

testWithTimeout({
  name: "a node whose disk fails while applying stops instead of diverging",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster({ env: { NOVACTL_ACCEL: "tcg" } });
  await cluster.start(3);
  const token = cluster.adminToken;
  try {
    const leader = await cluster.leaderName();
    const victim = ["n1", "n2", "n3"].find((n) => n !== leader)!;
    const before = (await api<Status>(`${cluster.node(victim).url}/api/v1/cluster?local=true`, {
      token,
    })).body.appliedIndex;
    let appliedAtFailure = 0;
    await step(t, `break ${victim}'s state database under it, then commit a write`, async () => {
      // Another process dropping a table stands in for a failing disk: SQLite errors
      // that have nothing to do with the command being applied.
      const db = new DatabaseSync(join(cluster.node(victim).dataDir, "state.db"));
      db.exec("DROP TABLE config_versions");
      db.close();
      const r = await api(`${cluster.node(leader).url}/api/v1/config/cluster.description`, {
        method: "PUT",
        token,
        body: { value: "written while a replica's disk fails" },
      });
      assertEquals(r.status, 200, JSON.stringify(r.body));
      const status = await Promise.race([
        cluster.node(victim).process!.status,
        sleep(20_000).then(() => null),
      ]);
      assert(status !== null, `${victim} stopped`);
      assertEquals(status.code, 70, "it exits non-zero (EX_SOFTWARE)");
      const log = await Deno.readTextFile(cluster.node(victim).logPath);
      assert(/fatal error in raft loop.*applying entry \d+ failed/.test(log), "it says why");
      const db2 = new DatabaseSync(join(cluster.node(victim).dataDir, "state.db"));
      appliedAtFailure = Number(
        (db2.prepare("SELECT value FROM meta WHERE key = 'applied_index'").get() as {
          value: string;
        }).value,
      );
      db2.close();
      assert(appliedAtFailure >= before, "nothing went backwards");
      const leaderApplied = (await api<Status>(
        `${cluster.node(leader).url}/api/v1/cluster?local=true`,
        { token },
      )).body.appliedIndex;
      assert(
        appliedAtFailure < leaderApplied,
        `the failed entry was not counted as applied (${appliedAtFailure} < ${leaderApplied})`,
      );
    });
  } catch (err) {
    console.log(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
  }
});

testWithTimeout({
  name: "readiness: a VM created right after /readyz first answers 200 on a fresh node is placed",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const dataDir = await Deno.makeTempDir({ prefix: "novactl-ready-" });
  // No NOVACTL_ACCEL: the real accelerator probe runs, as on a new host.
  const proc = await ManagedProcess.spawn({
    name: "n1",
    command: Deno.execPath(),
    args: [
      "run",
      "-A",
      new URL("../main.ts", import.meta.url).pathname,
      "node",
      "start",
      "--name",
      "n1",
      "--data-dir",
      join(dataDir, "n1"),
      "--listen",
      `${LOOPBACK}:0`,
      "--networking",
      "off",
    ],
    logPath: join(dataDir, "n1.log"),
  });
  let url = "";
  const ready = async () => {
    const r = await clusterFetch(`${url}/readyz`);
    return { status: r.status, body: await r.json() as { host: string } };
  };
  try {
    url = await eventually("the bound port in listen.json", async () => {
      const report = JSON.parse(await Deno.readTextFile(join(dataDir, "n1", "listen.json")));
      return report.url as string | undefined;
    }, 60_000);
    const token = await eventually(
      "admin token",
      async () => (await Deno.readTextFile(join(dataDir, "n1", "admin.token"))).trim() || undefined,
      60_000,
    );
    trustClusterCa(join(dataDir, "n1", "ca.crt")); // written before admin.token
    const run = (...args: string[]) => cli([...args, "--server", url, "--token", token]);

    await step(t, "import the guest image while the node may still be probing", async () => {
      await eventually(
        "the API answers",
        async () => (await clusterFetch(`${url}/healthz`)).ok,
        60_000,
      );
      const r = await run(...guestImportArgs(guest, "guest"));
      assertEquals(r.code, 0, r.stderr);
    });

    await step(t, "while /readyz is 503, a create is refused with its reason", async () => {
      const before = await ready();
      const r = await api<{ error: { message: string } }>(`${url}/api/v1/vms`, {
        method: "POST",
        token,
        body: { name: "early", image: "guest", cpus: 1, memoryMiB: 64, start: false },
      });
      if (before.status === 200 || r.status === 201) {
        // The probe won the race against the import on this machine: nothing to see here.
        console.log(`probe decided before the early create (readyz ${before.status})`);
        if (r.status === 201) await run("vm", "delete", "early");
        return;
      }
      assertEquals(r.status, 409, JSON.stringify(r.body));
      assert(
        /probing its accelerator|no hosts registered yet/.test(r.body.error.message),
        r.body.error.message,
      );
      console.log(`early create refused: ${r.body.error.message}`);
    });

    await step(
      t,
      "/readyz says what it waits for, then 200; a VM created at once is placed",
      async () => {
        const seen = new Set<string>();
        await eventually("/readyz 200", async () => {
          const r = await ready();
          seen.add(r.body.host);
          return r.status === 200;
        }, 60_000);
        const created = await api<{ name: string; node: string }>(`${url}/api/v1/vms`, {
          method: "POST",
          token,
          body: { name: "v1", image: "guest", cpus: 1, memoryMiB: 64 },
        });
        // 202 with its operation once the cluster runs at level 2 (VM lifecycle operations).
        assert([201, 202].includes(created.status), JSON.stringify(created.body));
        assertEquals(created.body.node, "n1");
        console.log(`/readyz host states seen before 200: ${[...seen].join(", ")}`);
        const vm = await eventually("v1 running", async () => {
          const v = (await api<{ state: string }>(`${url}/api/v1/vms/v1`, { token })).body;
          return v.state === "running" ? v : undefined;
        }, 90_000);
        assertEquals(vm.state, "running");
        const nodes = (await api<{ nodes: { inventory: { accel: string } }[] }>(
          `${url}/api/v1/nodes`,
          { token },
        )).body.nodes;
        assert(["kvm", "tcg"].includes(nodes[0].inventory.accel), "the probe decided");
        const del = await run("vm", "delete", "v1", "--force");
        assertEquals(del.code, 0, del.stderr);
      },
    );
  } catch (err) {
    console.log(await Deno.readTextFile(join(dataDir, "n1.log")).catch(() => ""));
    throw err;
  } finally {
    await proc.stop(5_000);
    // VMs outlive their node by design: a failed step must not leave its guest running.
    const nodeDir = join(dataDir, "n1");
    const qemus = await qemuPidsIn(nodeDir).catch(() => new Map<string, number>());
    for (const pid of qemus.values()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* already gone */ }
    }
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
