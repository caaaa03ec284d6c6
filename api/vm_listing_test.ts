/** The per-VM JSON `vm list` joins follows every change, a snapshot install included. */
import { assertEquals } from "../core/testing/assert.ts";
import { testVmSpec } from "../core/testing/fixtures.ts";
import { StateMachine } from "../core/fsm/mod.ts";
import type { Entry } from "../core/raft/types.ts";
import { join } from "node:path";
import { VmListing } from "./vm_listing.ts";

let idx = 0;
const entry = (c: Record<string, unknown>): Entry => ({
  index: ++idx,
  term: 1,
  type: "normal",
  data: JSON.stringify(c),
});

const image = {
  name: "img",
  kind: "kernel",
  kernel: { sha256: "a".repeat(64), size: 1 },
  sources: ["n1"],
};
const spec = (name: string) => testVmSpec(name, "n1", { uuid: `u-${name}` });

const statesOf = (listing: VmListing) =>
  (JSON.parse(`[${listing.page({}, "viewer").items.join(",")}]`) as {
    name: string;
    state: string;
  }[])
    .map((v) => `${v.name}:${v.state}`);

Deno.test("VmListing: a listed VM changes, goes and comes back with the state machine", async () => {
  idx = 0;
  const fsm = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  const listing = new VmListing(fsm);
  fsm.applyEntries([
    entry({ op: "image.create", image, by: "t", at: 1 }),
    entry({ op: "vm.create", vm: spec("a"), by: "t", at: 2 }),
    entry({ op: "vm.create", vm: spec("b"), by: "t", at: 2 }),
  ]);
  assertEquals(statesOf(listing), ["a:scheduled", "b:scheduled"]);
  fsm.applyEntries([entry({ op: "vm.observed", name: "a", node: "n1", state: "running", at: 3 })]);
  assertEquals(statesOf(listing), ["a:running", "b:scheduled"]);
  fsm.applyEntries([
    entry({ op: "vm.desired", name: "b", desired: "deleted", by: "t", at: 4 }),
    entry({ op: "vm.remove", name: "b", node: "n1", at: 5 }),
  ]);
  assertEquals(statesOf(listing), ["a:running"]);

  // Another replica's state, installed whole: nothing of the old copies survives.
  const other = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  idx = 0;
  other.applyEntries([
    entry({ op: "image.create", image, by: "t", at: 1 }),
    entry({ op: "vm.create", vm: spec("a"), by: "t", at: 2 }),
    entry({ op: "vm.observed", name: "a", node: "n1", state: "failed", reason: "x", at: 3 }),
    entry({ op: "vm.create", vm: spec("c"), by: "t", at: 4 }),
  ]);
  fsm.restore(other.snapshotData(), other.appliedIndex());
  assertEquals(statesOf(listing), ["a:failed", "c:scheduled"]);
  listing.close();
  fsm.close();
  other.close();
});
