import { explain, place } from "./placement.ts";
import { assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { host, vm } from "./testing.ts";
import type { HostView, PlacedVm, PlacementRequest } from "./types.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const GiB = 2 ** 30;
const SMALL: PlacementRequest = { cpus: 1, memoryMiB: 64 };

/** The reasons of a placement expected to fail. */
function rejected(
  req: PlacementRequest,
  hosts: HostView[],
  vms: PlacedVm[] = [],
  config = DEFAULT_CONFIG,
): Record<string, string> {
  const r = place(req, hosts, vms, config);
  if (r.ok) throw new Error(`expected no placement, got ${r.node}`);
  return r.reasons;
}

testWithTimeout({
  name: "only ready hosts are schedulable; the reason is the state",
  timeoutMs: 2 * MINUTE,
}, () => {
  const reasons = rejected(SMALL, [
    host("n1", 4096, { state: "cordoned" }),
    host("n2", 4096, { state: "draining" }),
    host("n3", 4096, { state: "offline" }),
    host("n4", 4096, { state: "maintenance" }),
  ]);
  assertEquals(reasons, { n1: "cordoned", n2: "draining", n3: "offline", n4: "maintenance" });
});

testWithTimeout({
  name: "a ready host the caller marks unschedulable is rejected",
  timeoutMs: 2 * MINUTE,
}, () => {
  const h = { ...host("n1", 4096), schedulable: false };
  assertEquals(rejected(SMALL, [h]), { n1: "not schedulable" });
});

testWithTimeout({ name: "a host without inventory is rejected", timeoutMs: 2 * MINUTE }, () => {
  assertEquals(rejected(SMALL, [host("n1", 4096, { inventory: null })]), {
    n1: "no inventory reported yet",
  });
});

testWithTimeout({
  name: "memory filter reports free and requested MiB, with the overcommit ratio",
  timeoutMs: 2 * MINUTE,
}, () => {
  const reasons = rejected({ cpus: 1, memoryMiB: 512 }, [host("n2", 1024)], [vm("a", "n2", 824)]);
  assertEquals(reasons, { n2: "memory 200 MiB free < 512 MiB requested" });
  const overcommitted = { ...DEFAULT_CONFIG, "scheduler.overcommit.memory": 1.5 };
  const r = place(
    { cpus: 1, memoryMiB: 512 },
    [host("n2", 1024)],
    [vm("a", "n2", 824)],
    overcommitted,
  );
  assertEquals(r.ok, true, "1024 x 1.5 - 824 = 712 >= 512");
});

testWithTimeout({
  name: "cpu filter reports free and requested cpus, with the overcommit ratio",
  timeoutMs: 2 * MINUTE,
}, () => {
  const config = { ...DEFAULT_CONFIG, "scheduler.overcommit.cpu": 1.25 };
  const reasons = rejected(
    { cpus: 2, memoryMiB: 64 },
    [host("n1", 4096)],
    [vm("a", "n1", 64)],
    config,
  );
  assertEquals(reasons, { n1: "cpu 1.5 free < 2 requested" }, "2 x 1.25 - 1 = 1.5");
});

testWithTimeout({
  name: "disk filter counts the disks of the VMs on the host, with the overcommit ratio",
  timeoutMs: 2 * MINUTE,
}, () => {
  const vms = [vm("a", "n1", 64, { disks: [{ sizeBytes: 6 * GiB }, { sizeBytes: 2 * GiB }] })];
  const req = { ...SMALL, diskBytes: 3 * GiB };
  assertEquals(rejected(req, [host("n1", 4096, { diskGiB: 10 })], vms), {
    n1: "disk 2 GiB free < 3 GiB requested",
  });
  const thin = { ...DEFAULT_CONFIG, "scheduler.overcommit.disk": 2 };
  assertEquals(place(req, [host("n1", 4096, { diskGiB: 10 })], vms, thin).ok, true);
  assertEquals(
    place(SMALL, [host("n1", 4096, { diskGiB: 10 })], vms, DEFAULT_CONFIG).ok,
    true,
    "no disk",
  );
});

testWithTimeout({
  name: "VMs being deleted free their capacity; templates hold only disk",
  timeoutMs: 2 * MINUTE,
}, () => {
  const vms = [
    vm("gone", "n1", 4000, { desired: "deleted", disks: [{ sizeBytes: 10 * GiB }] }),
    vm("tpl", "n1", 4000, { template: true, disks: [{ sizeBytes: 8 * GiB }] }),
  ];
  const r = place({ cpus: 2, memoryMiB: 4096, diskBytes: 3 * GiB }, [host("n1", 4096)], vms, {
    ...DEFAULT_CONFIG,
    "scheduler.overcommit.cpu": 1,
  });
  assertEquals(r, { ok: false, reasons: { n1: "disk 2 GiB free < 3 GiB requested" } });
});

testWithTimeout(
  { name: "label constraints = and != match node labels", timeoutMs: 2 * MINUTE },
  () => {
    const hs = [
      host("n1", 4096, { labels: { zone: "a", ssd: "true" } }),
      host("n2", 4096, { labels: { zone: "b" } }),
      host("n3", 4096),
    ];
    const inA = place(
      { ...SMALL, constraints: [{ key: "zone", op: "=", value: "a" }] },
      hs,
      [],
      DEFAULT_CONFIG,
    );
    assertEquals(inA.ok && inA.node, "n1");
    if (inA.ok) assertEquals(inA.reasons, { n2: "label zone=b != a", n3: "label zone unset != a" });
    const notA = place(
      { ...SMALL, constraints: [{ key: "zone", op: "!=", value: "a" }] },
      hs,
      [],
      DEFAULT_CONFIG,
    );
    if (!notA.ok) throw new Error("expected a placement");
    assertEquals(Object.keys(notA.scores), ["n2", "n3"], "an unset label is != a");
    assertEquals(notA.reasons, { n1: "label zone=a (want != a)" });
    const both = rejected({
      ...SMALL,
      constraints: [{ key: "zone", op: "=", value: "b" }, { key: "ssd", op: "=", value: "true" }],
    }, hs);
    assertEquals(both, {
      n1: "label zone=a != b",
      n2: "label ssd unset != true",
      n3: "label zone unset != b",
    });
  },
);

testWithTimeout({ name: "an explicit node is the only candidate", timeoutMs: 2 * MINUTE }, () => {
  const hs = [host("n1", 4096), host("n2", 128), host("n3", 4096, { state: "cordoned" })];
  const r = place({ ...SMALL, node: "n2" }, hs, [], DEFAULT_CONFIG);
  assertEquals(r.ok && [r.node, r.reasons], ["n2", {}]);
  assertEquals(rejected({ ...SMALL, node: "n3" }, hs), { n3: "cordoned" });
  assertEquals(rejected({ ...SMALL, node: "n9" }, hs), { n9: "no such node" });
});

testWithTimeout({
  name: "excluded hosts are rejected, even when named explicitly",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("n1", 8192), host("n2", 4096)];
  const r = place({ ...SMALL, exclude: ["n1"] }, hs, [], DEFAULT_CONFIG);
  assertEquals(r.ok && [r.node, r.reasons], ["n2", { n1: "excluded" }]);
  assertEquals(rejected({ ...SMALL, node: "n1", exclude: ["n1", "n7"] }, hs), { n1: "excluded" });
});

testWithTimeout({
  name: "the reason shown is the first filter that rejects",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [
    host("n1", 16, { state: "cordoned", labels: { zone: "b" } }),
    host("n2", 16, { labels: { zone: "b" } }),
    host("n3", 16, { labels: { zone: "a" } }),
  ];
  const req: PlacementRequest = {
    ...SMALL,
    exclude: ["n1"],
    constraints: [{ key: "zone", op: "=", value: "a" }],
  };
  assertEquals(rejected(req, hs), {
    n1: "excluded",
    n2: "label zone=b != a",
    n3: "memory 16 MiB free < 64 MiB requested",
  });
});

testWithTimeout(
  { name: "explain joins per-host reasons in host order", timeoutMs: 2 * MINUTE },
  () => {
    const reasons = rejected(
      { cpus: 1, memoryMiB: 512 },
      [host("n3", 4096, { state: "cordoned" }), host("n2", 1024)],
      [vm("a", "n2", 824)],
    );
    assertEquals(explain(reasons), "n2: memory 200 MiB free < 512 MiB requested; n3: cordoned");
    assertEquals(explain({}), "no hosts registered yet", "never an empty explanation");
  },
);
