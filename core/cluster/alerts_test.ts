/**
 * The leader's alert loop over a real state machine (proposals applied at once), fake hosts'
 * samples, a fake clock and a local webhook receiver: a VM rule selects by label and reads the
 * VM's host's sample; a stale sample decides nothing; firing then resolved reach the webhook in
 * order; a follower evaluates nothing; a new leader does not fire again what fires.
 */
import { join } from "node:path";
import { assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { StateMachine } from "../fsm/state_machine.ts";
import type { Command, VmRecord } from "../fsm/mod.ts";
import type { NodeRecord } from "../fsm/nodes.ts";
import type { Entry } from "../raft/types.ts";
import type { HostSample, VmSample } from "../../host/metrics/samples.ts";
import { AlertManager, type AlertNode, clusterValue, type LatestSamples } from "./alerts.ts";
import type { AlertNotification } from "./webhook.ts";

const VM_SAMPLE: VmSample = {
  cpuPercent: 0,
  memoryBytes: 0,
  balloonBytes: null,
  diskReadBytesPerSec: 0,
  diskWriteBytesPerSec: 0,
  diskReadOpsPerSec: 0,
  diskWriteOpsPerSec: 0,
  netRxBytesPerSec: 0,
  netTxBytesPerSec: 0,
};
const HOST_SAMPLE: HostSample = {
  cpuPercent: 0,
  memoryUsedBytes: 0,
  memoryTotalBytes: 1,
  diskUsedBytes: 0,
  diskTotalBytes: 1,
  poolAllocatedBytes: 0,
  load1: 0,
  vms: 0,
};

Deno.test("alert manager: fires after the window, resolves, webhooks in order; leader only", async () => {
  const fsm = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  let idx = 0;
  const propose = (c: Command) => {
    const e: Entry = { index: ++idx, term: 1, type: "normal", data: JSON.stringify(c) };
    const r = fsm.applyEntries([e]).get(e.index)!;
    if (!r.ok) throw r.error;
    return Promise.resolve(r.value);
  };
  await propose({
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "n1", url: "http://a" },
    adminTokenHash: "h",
    config: DEFAULT_CONFIG,
    at: 1,
  });
  const got: AlertNotification[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (r) => {
    got.push(await r.json());
    return new Response(null, { status: 200 });
  });
  let now = 1_000_000;
  let leader = true;
  let cpu = 95;
  let sampledAt = now;
  const vm = (name: string, labels: Record<string, string>) =>
    ({ name, node: "n2", state: "running", labels }) as unknown as VmRecord;
  const node: AlertNode = {
    id: "n1",
    isLeader: () => leader,
    propose,
    fsm: {
      alerts: fsm.alerts,
      vms: () => [vm("web1", { tier: "web" }), vm("db1", { tier: "db" })],
      nodes: () => [{ name: "n2", state: "ready", labels: {} } as unknown as NodeRecord],
      vmCountsByState: () => ({ running: 2 }),
    },
  };
  const asked: string[] = [];
  const samples = (host: string): Promise<LatestSamples | null> => {
    asked.push(host);
    return Promise.resolve({
      host: { t: sampledAt, sample: HOST_SAMPLE },
      vms: {
        web1: { t: sampledAt, sample: { ...VM_SAMPLE, cpuPercent: cpu } },
        db1: { t: sampledAt, sample: { ...VM_SAMPLE, cpuPercent: 99 } },
      },
    });
  };
  const opts = {
    intervalMs: 1_000,
    samples,
    now: () => now,
    retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 10, timeoutMs: 2_000 },
  };
  const m = new AlertManager(node, opts);
  try {
    await propose({
      op: "alert.rule.create",
      rule: {
        name: "hot",
        metric: "vm.cpu",
        comparison: "above",
        threshold: 90,
        forMs: 5_000,
        labels: { tier: "web" },
        webhook: `http://127.0.0.1:${server.addr.port}/h`,
        enabled: true,
      },
      by: "t",
      at: now,
    });
    const tick = async (dt: number) => {
      now += dt;
      sampledAt = now;
      await m.tick();
    };
    await tick(0);
    await tick(4_000);
    assertEquals(fsm.alerts.firing(), [], "pending: 4 s of a 5 s window");
    assertEquals(asked, ["n2", "n2"], "the VM's host is asked");
    await tick(1_000);
    assertEquals(fsm.alerts.firing().map((a) => [a.subject, a.value]), [["web1", 95]]);
    // db1 is hotter but not selected by the label.
    // A stale sample (older than 3 intervals and the pull timeout) decides nothing.
    cpu = 10;
    now += 60_000;
    await m.tick();
    assertEquals(fsm.alerts.firing().length, 1, "stale: still firing");
    // A follower evaluates nothing; the next leader does not fire again.
    leader = false;
    await tick(1_000);
    assertEquals(fsm.alerts.firing().length, 1);
    leader = true;
    cpu = 97;
    await tick(1_000);
    assertEquals(fsm.alerts.list().length, 1, "not fired twice");
    cpu = 10;
    await tick(1_000);
    assertEquals(fsm.alerts.firing(), []);
    await m.idle();
    assertEquals(got.map((h) => [h.state, h.subject, h.value]), [
      ["firing", "web1", 95],
      ["resolved", "web1", 10],
    ]);
    assertEquals(got[0].forSeconds, 5);
  } finally {
    m.stop();
    await server.shutdown();
  }
});

Deno.test("alert manager: cluster values from VM and host states", () => {
  const nodes = [{ state: "ready" }, { state: "offline" }, { state: "offline" }] as const;
  assertEquals(clusterValue("cluster.vms.failed", { failed: 2, running: 3 }, nodes), 2);
  assertEquals(clusterValue("cluster.vms.stopped", { failed: 2 }, nodes), 0);
  assertEquals(clusterValue("cluster.vms", { failed: 2, running: 3 }, nodes), 5);
  assertEquals(clusterValue("cluster.nodes.offline", {}, nodes), 2);
});
