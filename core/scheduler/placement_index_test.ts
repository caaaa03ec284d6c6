import { place } from "./placement.ts";
import { PlacementIndex } from "./placement_index.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { host, hosts, vm } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const GiB = 2 ** 30;

testWithTimeout({
  name: "commit accounts for a decision so a batch stays within capacity",
  timeoutMs: 2 * MINUTE,
}, () => {
  const index = new PlacementIndex([host("n1", 1024), host("n2", 1024)], [], DEFAULT_CONFIG);
  const req = { cpus: 1, memoryMiB: 512 };
  const nodes: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = index.place(req);
    if (!r.ok) throw new Error("expected a placement");
    nodes.push(r.node);
    index.commit(`vm${i}`, r.node, req);
  }
  assertEquals(nodes, ["n1", "n2", "n1", "n2"], "spread alternates as hosts fill");
  assertEquals(index.place(req), {
    ok: false,
    reasons: {
      n1: "memory 0 MiB free < 512 MiB requested",
      n2: "memory 0 MiB free < 512 MiB requested",
    },
  });
});

testWithTimeout({
  name: "committing a VM the index holds moves it instead of counting it twice",
  timeoutMs: 2 * MINUTE,
}, () => {
  const disks = [{ sizeBytes: 4 * GiB }];
  const index = new PlacementIndex(hosts(2), [vm("a", "h01", 800, { disks })], DEFAULT_CONFIG);
  index.commit("a", "h02", { cpus: 1, memoryMiB: 800, diskBytes: 4 * GiB });
  assertEquals(index.usage("h01")?.used, { cpus: 0, memoryMiB: 0, diskBytes: 0 });
  assertEquals(index.usage("h02")?.used, { cpus: 1, memoryMiB: 800, diskBytes: 4 * GiB });
  assertEquals(index.usage("h02")?.vms, 1);
  index.release("a");
  assertEquals(index.usage("h02")?.vms, 0);
  index.release("never-there");
});

testWithTimeout({
  name: "a VM placed again is not counted against itself (resize)",
  timeoutMs: 2 * MINUTE,
}, () => {
  const vms = [vm("a", "n1", 800)];
  const hs = [host("n1", 1024)];
  const r = place({ name: "a", cpus: 1, memoryMiB: 1000, node: "n1" }, hs, vms, DEFAULT_CONFIG);
  assertEquals(r.ok && r.freeMemoryMiB, 1024);
  const other = place({ name: "b", cpus: 1, memoryMiB: 1000, node: "n1" }, hs, vms, DEFAULT_CONFIG);
  assertEquals(other.ok, false);
});

testWithTimeout({
  name: "decisions do not depend on the order hosts and VMs are given in",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = hosts(5);
  const vms = hs.map((h, i) => vm(`v${i}`, h.node.name, 100 * (i % 2)));
  const forward = place({ cpus: 1, memoryMiB: 64 }, hs, vms, DEFAULT_CONFIG);
  const backward = place(
    { cpus: 1, memoryMiB: 64 },
    [...hs].reverse(),
    [...vms].reverse(),
    DEFAULT_CONFIG,
  );
  assertEquals(forward, backward);
  assertEquals(forward.ok && forward.node, "h01");
});

testWithTimeout({
  name: "VMs on hosts unknown to the index are ignored, but can still be moved",
  timeoutMs: 2 * MINUTE,
}, () => {
  const index = new PlacementIndex(hosts(1), [vm("lost", "gone", 4000)], DEFAULT_CONFIG);
  assertEquals(index.usage("h01")?.vms, 0);
  index.commit("lost", "h01", { cpus: 1, memoryMiB: 4000 });
  assertEquals(index.usage("h01")?.used.memoryMiB, 4000);
  assertThrows(() => index.commit("x", "gone", { cpus: 1, memoryMiB: 1 }), /no such node gone/);
});

testWithTimeout({
  name: "a result's scores and reasons describe its decision, even when read after commits",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("n1", 1024), host("n2", 1024), host("n3", 1024, { state: "cordoned" })];
  const group = { name: "web", policy: "anti-affinity" as const, strict: true };
  const index = new PlacementIndex(hs, [vm("web1", "n1", 256, { group: "web" })], DEFAULT_CONFIG);
  const req = { cpus: 1, memoryMiB: 512, group };
  const first = index.place(req);
  index.commit("web2", "n2", req);
  assertEquals(JSON.parse(JSON.stringify(first)), {
    ok: true,
    node: "n2",
    freeMemoryMiB: 1024,
    strategy: "spread",
    scores: { n2: 50 },
    reasons: { n1: "anti-affinity group web: already runs web1", n3: "cordoned" },
  });
  const second = index.place(req);
  assertEquals(second, {
    ok: false,
    reasons: {
      n1: "anti-affinity group web: already runs web1",
      n2: "anti-affinity group web: already runs web2",
      n3: "cordoned",
    },
  });
  if (first.ok) {
    first.scores = {};
    assertEquals(first.scores, {}, "the lazy fields stay assignable");
  }
});
