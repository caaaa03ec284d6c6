import { assert, assertEquals } from "../testing/assert.ts";
import { registry } from "../metrics/mod.ts";
import type { OperationRecord } from "../fsm/mod.ts";
import { exportClusterMetrics } from "./cluster_metrics.ts";

function fakeNode() {
  const ops = new Map<string, Partial<OperationRecord>>();
  let listener: ((c: { resource: string; name?: string } | null) => void) | null = null;
  const node = {
    leader: true,
    isLeader: () => node.leader,
    fsm: {
      vmCountsByState: () => ({ running: 2, stopped: 1 }),
      operation: (id: string) => (ops.get(id) as OperationRecord) ?? null,
      onChange(l: typeof listener) {
        listener = l;
        return () => (listener = null);
      },
    },
  };
  const apply = (id: string, kind: string, state: string) => {
    ops.set(id, { id, kind, state } as Partial<OperationRecord>);
    listener?.({ resource: "operation", name: id });
  };
  return { node, apply };
}

const value = (text: string, series: string) => {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.split(" ")[1]) : null;
};

Deno.test("cluster metrics: VMs by state and ended operations, on the leader only", async () => {
  const { node, apply } = fakeNode();
  const stop = exportClusterMetrics(node);
  try {
    let text = await registry.metrics();
    assertEquals(value(text, 'novactl_cluster_vms{state="running"}'), 2);
    assertEquals(value(text, 'novactl_cluster_vms{state="stopped"}'), 1);
    const before = value(text, 'novactl_migrations_total{result="succeeded"}') ?? 0;

    apply("mig-1", "migrate", "running"); // not ended: not counted
    apply("mig-1", "migrate", "succeeded");
    apply("mig-1", "migrate", "succeeded"); // applied again (a replay): counted once
    apply("drn-1", "drain", "failed");
    node.leader = false;
    apply("mig-2", "migrate", "succeeded"); // a follower counts nothing
    text = await registry.metrics();
    assertEquals(value(text, 'novactl_migrations_total{result="succeeded"}'), before + 1);
    assert(value(text, 'novactl_operations_total{kind="drain",result="failed"}')! >= 1);
    assert(!text.includes("novactl_cluster_vms{"), "a follower exports no VM counts");
  } finally {
    stop();
  }
});
