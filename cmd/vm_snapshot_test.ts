/**
 * `novactl vm snapshot create|restore|delete` wait through the operation by default: the
 * real CLI against the real API and snapshot runner of a one-voter cluster, the host's
 * snapshot work simulated (host/snapshots/testing.ts). `--no-wait` prints the operation's
 * id, `-o json` is one document (the operation), a failed operation exits 1, and
 * `--timeout` gives up on one still running. Below cluster level 2 the API answers when done
 * (as release 0.1.0 did): the commands then have nothing to wait for.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { SnapshotRunner } from "../host/snapshots/mod.ts";
import { hostClusterOf, SimulatedSnapshotHost, stateFileOf } from "../host/snapshots/testing.ts";
import type { Migrator, VmHost } from "../host/mod.ts";
import { servedCluster } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  { name: "CLI: vm snapshot commands wait for their operation", ...opts },
  async (t) => {
    let sim: SimulatedSnapshotHost | null = null;
    let runner: SnapshotRunner | null = null;
    const { c, cli, stop } = await servedCluster((c) => {
      sim = new SimulatedSnapshotHost(c);
      runner = new SnapshotRunner(hostClusterOf(c), sim, stateFileOf(c));
      return {
        snapshots: runner,
        host: sim as unknown as VmHost, // what the routes call below level 2
        migrator: { abort: () => false } as unknown as Migrator,
      };
    }, { level: 1 }); // as release 0.1.0 made it
    const host = sim! as SimulatedSnapshotHost;
    try {
      await (runner! as SnapshotRunner).start();
      await c.vm({ name: "web", node: "n1" }, "running");

      await t.step("below cluster level 2 they answer when done, as 0.1.0 did", async () => {
        const r = await cli("vm", "snapshot", "create", "web", "s0", "--memory");
        assertEquals([r.code, r.stdout], [0, "snapshot s0 of web created\n"], r.stderr);
        assertEquals(c.node.fsm.vm("web")!.snapshots.map((s) => [s.name, s.memory]), [
          ["s0", true],
        ]);
        const j = await cli("vm", "snapshot", "restore", "web", "s0", "-o", "json");
        assertEquals([j.code, JSON.parse(j.stdout).name], [0, "web"], j.stderr);
        const d = await cli("vm", "snapshot", "delete", "web", "s0", "--no-wait");
        assertEquals([d.code, d.stdout], [0, "snapshot s0 of web deleted\n"], d.stderr);
        assertEquals(c.node.fsm.vm("web")!.snapshots, []);
        assertEquals(c.node.fsm.operations(), [], "no operation recorded");
        await c.node.propose({ op: "cluster.upgrade", level: 2, at: Date.now() });
      });

      await t.step("create waits and says so; -o json is the finished operation", async () => {
        const r = await cli("vm", "snapshot", "create", "web", "s1");
        assertEquals([r.code, r.stdout], [0, "snapshot s1 of web created\n"], r.stderr);
        const j = await cli("vm", "snapshot", "create", "web", "s2", "-o", "json");
        assertEquals(j.code, 0, j.stderr);
        const op = JSON.parse(j.stdout);
        assertEquals([op.kind, op.state, op.result.snapshot], [
          "snapshot-create",
          "succeeded",
          "s2",
        ]);
        const names = c.node.fsm.vm("web")!.snapshots.map((s) => s.name);
        assertEquals(names, ["s1", "s2"]);
      });

      await t.step("--no-wait prints the operation's id at once", async () => {
        const r = await cli("vm", "snapshot", "delete", "web", "s2", "--no-wait");
        assertEquals(r.code, 0, r.stderr);
        const id = /^snapshot-delete (\S+) started\n$/.exec(r.stdout)?.[1];
        assert(id, r.stdout);
        const w = await cli("operation", "wait", id, "-o", "json");
        assertEquals([w.code, JSON.parse(w.stdout).state], [0, "succeeded"], w.stderr);
      });

      await t.step("a failed operation exits 1 with its error; refusals as before", async () => {
        host.failing.add("bad");
        const r = await cli("vm", "snapshot", "create", "web", "bad");
        assertEquals(r.code, 1);
        assertEquals(r.stdout, "");
        assert(/QEMU refused snapshot bad/.test(r.stderr), r.stderr);
        const dup = await cli("vm", "snapshot", "create", "web", "s1");
        assertEquals(dup.code, 1);
        assert(/snapshot "s1" already exists/.test(dup.stderr), dup.stderr);
      });

      await t.step("--timeout gives up on an operation still running", async () => {
        let open!: () => void;
        host.gate = new Promise((r) => open = r);
        try {
          const r = await cli("vm", "snapshot", "create", "web", "s3", "--timeout", "1s");
          assert(r.code !== 0, "a wait that runs out fails");
          assert(/still running after 1 s/.test(r.stderr), r.stderr);
        } finally {
          open();
          host.gate = null;
        }
        const restored = await cli("vm", "snapshot", "restore", "web", "s1", "--memory");
        assert(restored.code !== 0, "restore takes no --memory");
      });
    } finally {
      (runner as SnapshotRunner | null)?.stop();
      await stop();
    }
  },
);
