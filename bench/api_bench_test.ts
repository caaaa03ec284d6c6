/** bench:api's placement check sees what it is there to see (and nothing else). */
import { assertEquals } from "../core/testing/assert.ts";
import { placementViolations } from "./api_bench.ts";

const hosts = [
  { name: "n1", inventory: { cpus: 2, memoryMiB: 1024 } },
  { name: "n2", inventory: { cpus: 2, memoryMiB: 1024 } },
];
const config = { "scheduler.overcommit.cpu": 2, "scheduler.overcommit.memory": 1 };
const vm = (name: string, node: string, extra: Record<string, unknown> = {}) => ({
  name,
  node,
  cpus: 1,
  memoryMiB: 256,
  desired: "stopped",
  ...extra,
});
const groups = [{ name: "web", policy: "anti-affinity" as const, strict: true }];

Deno.test("placement check: a cluster within capacity and its groups passes", () => {
  const vms = [
    vm("a", "n1", { group: "web" }),
    vm("b", "n2", { group: "web" }),
    vm("c", "n1", { cpus: 3 }),
    // Deleted VMs and templates hold no CPU or memory.
    vm("gone", "n1", { cpus: 8, desired: "deleted" }),
    vm("tpl", "n1", { cpus: 8, template: true }),
  ];
  assertEquals(placementViolations(hosts, config, vms, groups), []);
});

Deno.test("placement check: an over-committed host and broken strict groups are found", () => {
  const vms = [
    vm("a", "n1", { group: "web", cpus: 4 }),
    vm("b", "n1", { group: "web", memoryMiB: 900 }),
    vm("x", "n1", { group: "db" }),
    vm("y", "n2", { group: "db" }),
  ];
  const both = [...groups, { name: "db", policy: "affinity" as const, strict: true }];
  assertEquals(placementViolations(hosts, config, vms, both), [
    "n1 holds 6 vCPUs > 4",
    "n1 holds 1412 MiB > 1024 MiB",
    "anti-affinity group web: 2 VMs on 1 hosts",
    "affinity group db: spread over n1, n2",
  ]);
});
