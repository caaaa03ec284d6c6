/**
 * `vm create|start|stop|restart|delete` at cluster level 2: without `--wait` they print the
 * operation that follows the action; with it they wait for that operation (a restart for a new
 * run) and `-o json` prints one document, the VM with the finished operation.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { servedCluster } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

testWithTimeout(
  {
    name: "vm lifecycle commands follow their operation",
    timeoutMs: 2 * MINUTE,
    sanitizeOps: false,
    sanitizeResources: false,
  },
  async () => {
    const { c, cli, stop } = await servedCluster();
    try {
      await c.node.propose({ op: "cluster.upgrade", level: 2, at: Date.now() });
      let r = await cli("vm", "create", "web", "--image", "img", "--node", "n1");
      assertEquals(r.code, 0, r.stderr);
      assert(/starting \(operation vmop-\d+-0\)/.test(r.stdout), r.stdout);
      await c.observe("web", "n1", "running");

      r = await cli("vm", "stop", "web", "-o", "json");
      assertEquals(r.code, 0, r.stderr);
      const stopped = JSON.parse(r.stdout);
      assertEquals([stopped.name, stopped.operation.kind], ["web", "stop"]);
      await c.observe("web", "n1", "stopped");
      r = await cli("operation", "show", stopped.operation.id, "-o", "json");
      assertEquals(JSON.parse(r.stdout).state, "succeeded");

      r = await cli("vm", "start", "web", "--wait", "--timeout", "1s");
      assertEquals(r.code, 1, "no run reported within the timeout");
      assert(/start web \(operation vmop-\d+\) still running/.test(r.stderr), r.stderr);

      const restarting = cli("vm", "restart", "web", "--wait", "--timeout", "60s", "-o", "json");
      await c.observe("web", "n1", "running"); // the start's run: before the restart
      const gen = c.node.fsm.vm("web")!.generation;
      await c.until("restart committed", () => c.node.fsm.vm("web")!.generation > gen);
      await c.observe("web", "n1", "stopping", "restarting");
      await c.observe("web", "n1", "starting");
      await c.observe("web", "n1", "running");
      r = await restarting;
      assertEquals(r.code, 0, r.stderr);
      const done = JSON.parse(r.stdout);
      assertEquals([done.state, done.operation.kind, done.operation.state], [
        "running",
        "restart",
        "succeeded",
      ]);

      const deleting = cli("vm", "delete", "web", "--force", "--wait", "-o", "json");
      await c.until("delete committed", () => c.node.fsm.vm("web")?.desired === "deleted");
      await c.node.propose({ op: "vm.remove", name: "web", node: "n1", at: Date.now() });
      r = await deleting;
      assertEquals(r.code, 0, r.stderr);
      const gone = JSON.parse(r.stdout);
      assertEquals([gone.deleted, gone.operation.kind, gone.operation.state], [
        true,
        "delete",
        "succeeded",
      ]);
    } finally {
      await stop();
    }
  },
);
