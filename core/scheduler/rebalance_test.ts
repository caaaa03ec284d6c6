import { assert, assertEquals } from "../testing/assert.ts";
import { planRebalance } from "./rebalance.ts";
import type { HostView, PlacedVm } from "./types.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

function host(name: string, memoryMiB = 4096): HostView {
  return {
    state: "ready",
    schedulable: true,
    node: {
      name,
      url: "",
      state: "ready",
      labels: {},
      inventory: {
        cpus: 8,
        memoryMiB,
        diskGiB: 100,
        diskFreeGiB: 100,
        accel: "tcg",
        arch: "x86_64",
        kernel: "",
        hostname: name,
        version: "",
      },
      joinedAt: "",
      updatedAt: "",
    },
  };
}

const vm = (name: string, node: string, memoryMiB = 512, group?: string): PlacedVm => ({
  name,
  node,
  cpus: 1,
  memoryMiB,
  desired: "running",
  group,
});

testWithTimeout({
  name: "the planner evens out a skewed cluster and stops when balanced",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hosts = [host("n1"), host("n2"), host("n3")];
  const vms = Array.from({ length: 6 }, (_, i) => vm(`v${i}`, "n1"));
  const plan = planRebalance(hosts, vms, DEFAULT_CONFIG, {
    threshold: 0.1,
    maxMoves: 10,
    requestOf: (v) => ({ name: v.name, cpus: v.cpus, memoryMiB: v.memoryMiB }),
  });
  assertEquals(plan.moves.length, 4, JSON.stringify(plan));
  const perHost = new Map<string, number>([["n1", 6]]);
  for (const m of plan.moves) {
    perHost.set(m.from, (perHost.get(m.from) ?? 0) - 1);
    perHost.set(m.to, (perHost.get(m.to) ?? 0) + 1);
  }
  assertEquals([...perHost.values()].sort(), [2, 2, 2]);
  assert(plan.spreadAfter < plan.spreadBefore);
  assert(plan.imbalanceAfter <= 0.1);
});

testWithTimeout({
  name: "the planner honours strict anti-affinity and frozen VMs",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hosts = [host("n1"), host("n2")];
  const vms = [vm("a", "n1", 512, "web"), vm("b", "n1", 512), vm("c", "n2", 512, "web")];
  const group = { name: "web", policy: "anti-affinity" as const, strict: true };
  const plan = planRebalance(hosts, vms, DEFAULT_CONFIG, {
    threshold: 0,
    maxMoves: 10,
    frozen: new Set(["b"]),
    requestOf: (v) => ({
      name: v.name,
      cpus: v.cpus,
      memoryMiB: v.memoryMiB,
      group: v.group ? group : undefined,
    }),
  });
  assertEquals(plan.moves, [], "a cannot join c on n2; b is frozen");
});
