/**
 * `vm wait NAME --for state=S|delete` against a served one-node cluster (no hypervisor: VM states
 * are moved by hand through the state machine, as a host would report them).
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { servedCluster } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

testWithTimeout(
  {
    name: "vm wait: returns when the state is reached, exit 1 at the timeout, usage errors are 2",
    timeoutMs: 2 * MINUTE,
    sanitizeOps: false,
    sanitizeResources: false,
  },
  async () => {
    const { c, cli, stop } = await servedCluster();
    try {
      assertEquals((await cli("vm", "create", "web", "--image", "img", "--no-start")).code, 0);
      const state = c.node.fsm.vm("web")!.state;

      let r = await cli("vm", "wait", "web", "--for", `state=${state}`, "-o", "json");
      assertEquals([r.code, r.stderr], [0, ""]);
      assertEquals(JSON.parse(r.stdout).name, "web");

      const started = Date.now();
      r = await cli("vm", "wait", "web", "--for", "state=migrating", "--timeout", "2s");
      assertEquals(r.code, 1, r.stderr);
      assert(/not migrating/.test(r.stderr) && Date.now() - started < 30_000, r.stderr);

      r = await cli("vm", "wait", "web", "--for", "state=asleep");
      assertEquals(r.code, 2);
      assert(/state=STATE \(pending, scheduled/.test(r.stderr), r.stderr);
      r = await cli("vm", "wait", "web");
      assertEquals(r.code, 2, "--for is required");

      r = await cli("vm", "wait", "ghost", "--for", "delete", "-q");
      assertEquals([r.code, r.stdout], [0, "ghost\n"]);
    } finally {
      await stop();
    }
  },
);
