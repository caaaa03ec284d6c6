import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { eventually } from "../../tests/support/api.ts";
import { runTool } from "./daemon_dir.ts";
import {
  type CentralEndpoint,
  centralRemotes,
  ClusteredCentral,
  retireCentralMember,
} from "./ovn_cluster.ts";

/** Three members on loopback, each with ports of its own (as a test may choose them). */
function endpoint(i: number, base: number): CentralEndpoint {
  const p = base + 10 * i;
  return { address: "127.0.0.1", ports: { nb: p, sb: p + 1, nbRaft: p + 2, sbRaft: p + 3 } };
}

testWithTimeout({
  name: "OVN central, clustered: the first voter creates, the others join; NB writes replicate",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  // Below the ephemeral port range (32768+), where other processes bind at random.
  const base = 10_000 + (Deno.pid % 500) * 40;
  const dirs: string[] = [];
  const members: ClusteredCentral[] = [];
  for (let i = 0; i < 3; i++) {
    dirs.push(await Deno.makeTempDir({ prefix: "novactl-ovnc-" }));
    members.push(new ClusteredCentral(dirs[i], endpoint(i, base)));
  }
  const all = members.map((m) => m.self);
  const nbctl = (args: string[], db = centralRemotes(all, "nb")) =>
    runTool("ovn-nbctl", [`--db=${db}`, "--timeout=10", ...args]);
  try {
    await t.step("the first member creates the cluster, two more join through it", async () => {
      assertEquals(await members[0].ensureRunning([]), ["ovnnb_db", "ovnsb_db", "ovn-northd"]);
      for (const i of [1, 2]) {
        await members[i].ensureRunning(all.filter((_, j) => j !== i));
      }
      await eventually("3 servers in the NB cluster", async () => {
        const status = await members[0].clusterStatus("ovnnb_db");
        return (status.match(/^\s+\w{4} \(\w{4} at tcp:/gm) ?? []).length === 3 || undefined;
      }, 30_000);
    });

    await t.step("a write through the remotes is read from each member's own copy", async () => {
      await nbctl(["ls-add", "sw-clustered"]);
      for (const m of members) {
        await eventually(`sw-clustered on ${m.self.ports.nb}`, async () => {
          const out = await nbctl(
            ["--no-leader-only", "ls-list"],
            `tcp:${m.self.address}:${m.self.ports.nb}`,
          );
          return out.includes("sw-clustered") || undefined;
        });
      }
    });

    await t.step(
      "one member's NB server killed: writes go on, it comes back and catches up",
      async () => {
        const pid = (await members[0].pidOf("ovnnb_db"))!;
        Deno.kill(pid, "SIGKILL");
        await eventually(
          "seen dead",
          async () => (await members[0].pidOf("ovnnb_db")) === null || undefined,
        );
        await eventually("a write with one member down", async () => {
          await nbctl(["--may-exist", "ls-add", "sw-later"]);
          return true;
        }, 30_000);
        assert((await members[0].ensureRunning(all.slice(1))).includes("ovnnb_db"));
        await eventually("the restarted member has the later write", async () => {
          const out = await nbctl(
            ["--no-leader-only", "ls-list"],
            `tcp:127.0.0.1:${members[0].self.ports.nb}`,
          );
          return out.includes("sw-later") || undefined;
        }, 30_000);
      },
    );
  } finally {
    for (const m of members) await m.stop();
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});

testWithTimeout({
  name: "OVN central after a cluster recovery: the survivor's member is retired and starts alone",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  const base = 10_000 + ((Deno.pid + 250) % 500) * 40;
  const dirs: string[] = [];
  const members: ClusteredCentral[] = [];
  for (let i = 0; i < 3; i++) {
    dirs.push(await Deno.makeTempDir({ prefix: "novactl-ovnr-" }));
    members.push(new ClusteredCentral(dirs[i], endpoint(i, base)));
  }
  const all = members.map((m) => m.self);
  const alone = `tcp:127.0.0.1:${members[0].self.ports.nb}`;
  const nbctl = (args: string[], db = alone) =>
    runTool("ovn-nbctl", [`--db=${db}`, "--timeout=3", ...args]);
  let fresh: ClusteredCentral | null = null;
  try {
    await t.step(
      "three members, then two are lost: the survivor's member cannot write",
      async () => {
        await members[0].ensureRunning([]);
        for (const i of [1, 2]) await members[i].ensureRunning(all.filter((_, j) => j !== i));
        await eventually("3 servers in the NB cluster", async () => {
          const status = await members[0].clusterStatus("ovnnb_db");
          return (status.match(/^\s+\w{4} \(\w{4} at tcp:/gm) ?? []).length === 3 || undefined;
        }, 30_000);
        for (const i of [1, 2]) await members[i].stop();
        const refused = await nbctl(["ls-add", "sw-no-quorum"]).then(() => false, () => true);
        assert(refused, "a write without the OVSDB quorum fails");
      },
    );

    await t.step(
      "retired: daemons stopped, the dir moved aside; a new member runs alone",
      async () => {
        const aside = await retireCentralMember(dirs[0], Date.parse("2026-12-03T07:40:00Z"));
        assertEquals(aside, `${dirs[0]}/ovn.before-recovery-20261203t074000`);
        assertEquals(await members[0].pidOf("ovnnb_db"), null);
        assertEquals(
          await retireCentralMember(dirs[0], Date.now()),
          null,
          "nothing left to retire",
        );
        fresh = new ClusteredCentral(dirs[0], members[0].self);
        await fresh.ensureRunning([]);
        await eventually("a write to the one-member cluster", async () => {
          await nbctl(["--may-exist", "ls-add", "sw-recovered"]);
          return true;
        }, 30_000);
      },
    );
  } finally {
    await (fresh as ClusteredCentral | null)?.stop();
    for (const m of members) await m.stop();
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});
