import { explain, place } from "./placement.ts";
import { PlacementIndex } from "./placement_index.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { host, hosts, vm } from "./testing.ts";
import type { PlacementGroup, PlacementRequest } from "./types.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const strictAnti: PlacementGroup = { name: "web", policy: "anti-affinity", strict: true };
const softAnti: PlacementGroup = { ...strictAnti, strict: false };
const strictAffinity: PlacementGroup = { name: "db", policy: "affinity", strict: true };
const softAffinity: PlacementGroup = { ...strictAffinity, strict: false };

function member(group: PlacementGroup, memoryMiB = 256): PlacementRequest {
  return { cpus: 1, memoryMiB, group };
}

testWithTimeout({
  name: "strict anti-affinity never puts two members on one host across 20 decisions",
  timeoutMs: 2 * MINUTE,
}, () => {
  const index = new PlacementIndex(
    hosts(16),
    [vm("other", "h01", 256, { group: "db" })],
    DEFAULT_CONFIG,
  );
  const used = new Set<string>();
  const failures: string[] = [];
  for (let i = 1; i <= 20; i++) {
    const req = { ...member(strictAnti), name: `web${i}` };
    const r = index.place(req);
    if (!r.ok) {
      failures.push(explain(r.reasons));
      continue;
    }
    assert(!used.has(r.node), `web${i} placed on ${r.node}, which already runs a member`);
    used.add(r.node);
    index.commit(`web${i}`, r.node, req);
  }
  assertEquals(used.size, 16);
  assertEquals(failures.length, 4);
  assert(failures[0].startsWith("h01: anti-affinity group web: already runs web"), failures[0]);
  assertEquals(failures[0].split("; ").length, 16);
});

testWithTimeout({
  name: "strict anti-affinity counts members already in the state, not deleted ones",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = hosts(3);
  const vms = [
    vm("web1", "h01", 256, { group: "web" }),
    vm("web2", "h02", 256, { group: "web" }),
    vm("web3", "h03", 256, { group: "web", desired: "deleted" }),
  ];
  const r = place(member(strictAnti), hs, vms, DEFAULT_CONFIG);
  assertEquals(r.ok && [r.node, r.reasons], ["h03", {
    h01: "anti-affinity group web: already runs web1",
    h02: "anti-affinity group web: already runs web2",
  }]);
});

testWithTimeout({
  name: "a member being resized or moved does not repel itself",
  timeoutMs: 2 * MINUTE,
}, () => {
  const vms = [vm("web1", "h01", 256, { group: "web" })];
  const r = place(
    { ...member(strictAnti), name: "web1", node: "h01" },
    hosts(2),
    vms,
    DEFAULT_CONFIG,
  );
  assertEquals(r.ok, true);
});

testWithTimeout({
  name: "soft anti-affinity prefers an empty host but still places when there is none",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("n1", 8192), host("n2", 1024)];
  const withMember = [vm("web1", "n1", 256, { group: "web" })];
  const r = place(member(softAnti), hs, withMember, DEFAULT_CONFIG);
  assertEquals(r.ok && r.node, "n2", "n1 has far more free memory but runs web1");
  const everywhere = [...withMember, vm("web2", "n2", 256, { group: "web" })];
  const full = place(member(softAnti), hs, everywhere, DEFAULT_CONFIG);
  assertEquals(full.ok && [full.node, full.reasons], ["n1", {}]);
  if (full.ok) assert(full.scores.n1 < 0, "the penalty shows in the dry-run scores");
});

testWithTimeout({
  name: "soft anti-affinity picks the host with the fewest members",
  timeoutMs: 2 * MINUTE,
}, () => {
  const vms = [
    vm("web1", "h01", 256, { group: "web" }),
    vm("web2", "h01", 256, { group: "web" }),
    vm("web3", "h02", 256, { group: "web" }),
  ];
  const hs = [host("h01", 65536), host("h02", 4096)];
  const r = place(member(softAnti), hs, vms, DEFAULT_CONFIG);
  assertEquals(r.ok && r.node, "h02");
});

testWithTimeout({
  name: "strict affinity follows the members already placed",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = hosts(3);
  const first = place(member(strictAffinity), hs, [], DEFAULT_CONFIG);
  assertEquals(first.ok && first.node, "h01", "no member yet: any host");
  const vms = [vm("db1", "h02", 2048, { group: "db" })];
  const next = place(member(strictAffinity), hs, vms, DEFAULT_CONFIG);
  assertEquals(next.ok && [next.node, next.reasons], ["h02", {
    h01: "affinity group db: members are on h02",
    h03: "affinity group db: members are on h02",
  }]);
  const tooBig = place(member(strictAffinity, 3000), hs, vms, DEFAULT_CONFIG);
  assertEquals(
    !tooBig.ok && explain(tooBig.reasons),
    "h01: affinity group db: members are on h02; h02: memory 2048 MiB free < 3000 MiB requested; " +
      "h03: affinity group db: members are on h02",
  );
});

testWithTimeout({
  name: "soft affinity prefers members' hosts and falls back to others",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = hosts(3);
  const vms = [vm("db1", "h02", 2048, { group: "db" })];
  const joined = place(member(softAffinity), hs, vms, DEFAULT_CONFIG);
  assertEquals(joined.ok && joined.node, "h02", "h01 and h03 have more free memory");
  const tooBig = place(member(softAffinity, 3000), hs, vms, DEFAULT_CONFIG);
  assertEquals(tooBig.ok && tooBig.node, "h01");
});

testWithTimeout({ name: "members of other groups do not count", timeoutMs: 2 * MINUTE }, () => {
  const vms = [vm("db1", "h01", 256, { group: "db" }), vm("x", "h02", 256)];
  const r = place(member(strictAnti), hosts(2), vms, DEFAULT_CONFIG);
  assertEquals(r.ok && r.node, "h01");
});
