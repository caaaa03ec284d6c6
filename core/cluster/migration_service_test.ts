/**
 * Starting migrations on a real one-voter leader: what may move, where the
 * scheduler lets it go, and what the operation and the VM record say after.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { migrateVm, migratorPeer } from "./migration_service.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "migrateVm: what may move, and what a started migration records",
    ...opts,
  },
  async (t) => {
    const c = await TestCluster.start();
    try {
      await c.addHost("n2");
      await c.addHost("n3", { labels: { zone: "b" } });
      await c.addHost("small", { memoryMiB: 128 });

      await t.step("an unknown VM is 404", async () => {
        await assertRejects(() => migrateVm(c.node, "ghost", {}, "t"), NotFoundError);
      });

      await t.step("templates, deleting and transitional VMs are refused with 409", async () => {
        await c.vm({ name: "tpl", node: "n2", template: true, desired: "stopped" }, "stopped");
        await c.vm({ name: "gone", node: "n2", desired: "deleted" }, "stopped");
        await c.vm({ name: "booting", node: "n2" }, "stopped"); // desired running, not yet
        for (
          const [name, why] of [["tpl", "template"], ["gone", "being deleted"], [
            "booting",
            "stopped; migrate it running or stopped",
          ]]
        ) {
          const err = await assertRejects(() => migrateVm(c.node, name, {}, "t"), ConflictError);
          assert(err.message.includes(why), err.message);
        }
      });

      await t.step("--to its own host is 400 naming 'to'", async () => {
        await c.vm({ name: "web", node: "n2" }, "running");
        const err = await assertRejects(
          () => migrateVm(c.node, "web", { to: "n2" }, "t"),
          ValidationError,
        );
        assertEquals(err.issues.map((i) => i.field), ["to"]);
      });

      await t.step("a destination without room is 409 with the scheduler's reasons", async () => {
        const err = await assertRejects(
          () => migrateVm(c.node, "web", { to: "small" }, "t"),
          ConflictError,
        );
        assert(/no host can run web/.test(err.message), err.message);
        assert(JSON.stringify(err.details).includes("small"), JSON.stringify(err.details));
      });

      await t.step(
        "a running VM gets a live migration op, run by its host, and is marked",
        async () => {
          const op = await migrateVm(c.node, "web", { to: "n3" }, "alice");
          assertEquals(op.kind, "migrate");
          assertEquals([op.target, op.runner, op.by, op.state], ["web", "n2", "alice", "running"]);
          assertEquals(op.params, { from: "n2", to: "n3", live: true });
          assertEquals(c.node.fsm.vm("web")!.migration, { opId: op.id, to: "n3" });
        },
      );

      await t.step("a VM already migrating is refused, naming the operation", async () => {
        const opId = c.node.fsm.vm("web")!.migration!.opId;
        const err = await assertRejects(() => migrateVm(c.node, "web", {}, "t"), ConflictError);
        assert(err.message.includes(opId), err.message);
      });

      await t.step("a stopped VM moves cold; the scheduler never picks its own host", async () => {
        // Packing prefers the fullest host, which is its own: only the exclusion keeps it off.
        await c.vm({ name: "filler", node: "n1", memoryMiB: 3_000 });
        const cold = {
          name: "cold",
          node: "n1",
          desired: "stopped" as const,
          strategy: "pack" as const,
        };
        await c.vm({ ...cold, memoryMiB: 4_096 }, "stopped");
        const op = await migrateVm(c.node, "cold", {}, "t");
        assertEquals(op.params.live, false);
        assert(op.params.to !== "n1", `destination ${op.params.to}`);
      });
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "migratorPeer: a member's URL, the node's peer fetch and a bare address",
    ...opts,
  },
  async () => {
    const c = await TestCluster.start();
    try {
      await c.node.changeMembership({
        type: "addLearner",
        node: "v6",
        context: JSON.stringify({ url: "http://[::1]:7071" }),
      });
      const peer = migratorPeer(c.node, "n1");
      assertEquals(peer.url, "http://127.0.0.1:1");
      // Requests go as this node: its peer client (signed, or its own credential on http).
      assertEquals(peer.fetch, c.node.peerHttp.fetch);
      assertEquals(peer.address, "127.0.0.1");
      assertEquals(migratorPeer(c.node, "v6").address, "::1");
      const err = assertThrows(() => migratorPeer(c.node, "stranger"), ValidationError);
      assertEquals(err.issues.map((i) => i.field), ["node"]);
    } finally {
      await c.stop();
    }
  },
);
