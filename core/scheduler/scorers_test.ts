import { place } from "./placement.ts";
import { assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { host, vm } from "./testing.ts";
import type { HostView, PlacedVm, PlacementRequest, PlacementSuccess } from "./types.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const REQ: PlacementRequest = { cpus: 1, memoryMiB: 512 };
const PACK = { ...DEFAULT_CONFIG, "scheduler.strategy": "pack" as const };

function placed(
  req: PlacementRequest,
  hosts: HostView[],
  vms: PlacedVm[],
  config = DEFAULT_CONFIG,
): PlacementSuccess {
  const r = place(req, hosts, vms, config);
  if (!r.ok) throw new Error(`expected a placement, got ${JSON.stringify(r.reasons)}`);
  return r;
}

testWithTimeout({ name: "spread and pack choose different hosts", timeoutMs: 2 * MINUTE }, () => {
  const hs = [host("n1", 4096), host("n2", 4096), host("n3", 1024)];
  const vms = [vm("a", "n1", 3072), vm("b", "n3", 768)];
  const spread = placed(REQ, hs, vms);
  assertEquals([spread.node, spread.strategy], ["n2", "spread"]);
  const pack = placed(REQ, hs, vms, PACK);
  assertEquals([pack.node, pack.strategy], ["n1", "pack"]);
  assertEquals(pack.reasons, { n3: "memory 256 MiB free < 512 MiB requested" });
});

testWithTimeout({
  name: "scores are the memory percentage free (spread) or used (pack) after placing",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("n1", 4096), host("n2", 4096)];
  const vms = [vm("a", "n1", 3072)];
  assertEquals(placed(REQ, hs, vms).scores, { n1: 12.5, n2: 87.5 });
  assertEquals(placed(REQ, hs, vms, PACK).scores, { n1: 87.5, n2: 12.5 });
});

testWithTimeout({
  name: "spread compares free fractions, so a small idle host beats a big busy one",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("big", 16384), host("small", 2048)];
  const r = placed(REQ, hs, [vm("a", "big", 12288)]);
  assertEquals(r.node, "small", "75% free after placing vs 72%");
});

testWithTimeout({
  name: "the request's strategy overrides the configured one",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("n1", 4096), host("n2", 4096)];
  const vms = [vm("a", "n1", 2048)];
  assertEquals(placed({ ...REQ, strategy: "pack" }, hs, vms).node, "n1");
  assertEquals(placed({ ...REQ, strategy: "spread" }, hs, vms, PACK).node, "n2");
});

testWithTimeout({
  name: "spread breaks score ties towards fewer VMs, then by host name",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("n3", 4096), host("n2", 4096), host("n1", 4096)];
  const vms = [vm("a", "n1", 512), vm("b", "n1", 512), vm("c", "n2", 1024), vm("d", "n3", 1024)];
  assertEquals(placed(REQ, hs, vms).node, "n2", "n2 and n3 tie on score and VMs; n1 has two VMs");
  assertEquals(placed(REQ, hs, [], PACK).node, "n1", "identical hosts: the first name wins");
});

testWithTimeout({
  name: "pack skips the fullest host when the VM no longer fits there",
  timeoutMs: 2 * MINUTE,
}, () => {
  const hs = [host("n1", 4096), host("n2", 4096), host("n3", 4096)];
  const vms = [vm("a", "n1", 3800), vm("b", "n2", 2048)];
  const r = placed(REQ, hs, vms, PACK);
  assertEquals(r.node, "n2");
  assertEquals(Object.keys(r.scores), ["n2", "n3"]);
});
