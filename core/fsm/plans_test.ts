/**
 * `plan.apply` in the state machine: each planned create is checked again on its
 * chosen host as it is applied; only the ones that no longer fit are refused.
 */
import { StateMachine } from "./state_machine.ts";
import { testVmSpec } from "../testing/fixtures.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { Command, PlannedCreateResult, VmSpec } from "./commands.ts";
import type { Entry } from "../raft/types.ts";
import { join } from "node:path";

let idx = 0;
const entry = (c: Command): Entry => ({
  index: ++idx,
  term: 1,
  type: "normal",
  data: JSON.stringify(c),
});

/** Applies one command and returns its value (throws on a rejected entry). */
function apply(fsm: StateMachine, c: Command): unknown {
  const e = entry(c);
  const r = fsm.applyEntries([e]).get(e.index)!;
  if (!r.ok) throw r.error;
  return r.value;
}

/** A state with hosts h1, h2 (2 CPUs each, overcommit 1), an image and a strict anti-affinity group. */
async function cluster(): Promise<StateMachine> {
  idx = 0;
  const fsm = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  apply(fsm, {
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "h1", url: "http://a" },
    adminTokenHash: "h",
    config: { ...DEFAULT_CONFIG, "scheduler.overcommit.cpu": 1 },
    at: 1,
  });
  for (const name of ["h1", "h2"]) {
    apply(fsm, {
      op: "node.upsert",
      name,
      url: `http://${name}`,
      labels: { zone: name === "h1" ? "a" : "b" },
      inventory: {
        cpus: 2,
        memoryMiB: 4096,
        diskGiB: 100,
        diskFreeGiB: 100,
        accel: "tcg",
        arch: "x86_64",
        kernel: "k",
        hostname: name,
        version: "v",
      },
      at: 2,
    });
  }
  apply(fsm, {
    op: "image.create",
    image: {
      name: "img",
      kind: "kernel",
      kernel: { sha256: "0".repeat(64), size: 1 },
      sources: [],
    },
    by: "t",
    at: 3,
  });
  apply(fsm, {
    op: "group.create",
    group: { name: "web", policy: "anti-affinity", strict: true },
    by: "t",
    at: 4,
  });
  return fsm;
}

const vm = testVmSpec;

function plan(fsm: StateMachine, ...vms: VmSpec[]): PlannedCreateResult[] {
  const value = apply(fsm, {
    op: "plan.apply",
    creates: vms.map((v) => ({ vm: v, by: "t" })),
    at: 10,
  }) as { results: PlannedCreateResult[] };
  return value.results;
}

const outcome = (r: PlannedCreateResult) => r.ok ? "created" : r.stale ? "stale" : r.error.code;

Deno.test("plan.apply refuses only the creates that no longer fit, never the whole batch", async () => {
  const fsm = await cluster();
  // h1 holds 2 CPUs: the third VM planned onto it no longer fits; the one on h2 does.
  const results = plan(fsm, vm("a", "h1"), vm("b", "h1"), vm("c", "h1"), vm("d", "h2"));
  assertEquals(results.map(outcome), ["created", "created", "stale", "created"]);
  const refused = results[2];
  assert(
    !refused.ok && /cpu 0 free < 1 requested/.test(refused.error.message),
    JSON.stringify(refused),
  );
  assertEquals(fsm.vms().map((v) => `${v.name}@${v.node}`), ["a@h1", "b@h1", "d@h2"]);
});

Deno.test("plan.apply checks strict groups and label constraints against what it just applied", async () => {
  const fsm = await cluster();
  const results = plan(
    fsm,
    vm("w1", "h1", { group: "web" }),
    vm("w2", "h1", { group: "web" }),
    vm("w3", "h2", { group: "web" }),
    vm("z", "h1", { constraints: [{ key: "zone", op: "=", value: "b" }] }),
  );
  assertEquals(results.map(outcome), ["created", "stale", "created", "stale"]);
  const w2 = results[1];
  assert(!w2.ok && /anti-affinity group web/.test(w2.error.message), JSON.stringify(w2));
});

Deno.test("plan.apply: a name taken or an unknown image is refused for good (not stale)", async () => {
  const fsm = await cluster();
  plan(fsm, vm("a", "h1"));
  const results = plan(fsm, vm("a", "h2"), vm("b", "h2", { image: "nope" }), vm("c", "h2"));
  assertEquals(results.map(outcome), ["conflict", "not_found", "created"]);
  assertEquals(fsm.vm("a")!.node, "h1", "the first a stays where it was");
});

Deno.test("plan.apply's check follows other changes: deleted VMs free room, resizes take it", async () => {
  const fsm = await cluster();
  plan(fsm, vm("a", "h1"), vm("b", "h1"));
  assertEquals(plan(fsm, vm("c", "h1")).map(outcome), ["stale"]);
  // Deleting an unplaced-on-host VM removes its row; a placed one is marked deleted (frees room).
  apply(fsm, { op: "vm.desired", name: "b", desired: "deleted", by: "t", at: 11 });
  assertEquals(plan(fsm, vm("c", "h1")).map(outcome), ["created"]);
  // a grows to 2 CPUs: h1 is over its capacity now, and nothing more fits there.
  apply(fsm, { op: "vm.update", name: "a", changes: { cpus: 2 }, by: "t", at: 12 });
  assertEquals(plan(fsm, vm("e", "h1", { cpus: 1 })).map(outcome), ["stale"]);
  // More CPUs on h1 (a new inventory) is seen too.
  apply(fsm, {
    op: "node.upsert",
    name: "h1",
    url: "http://h1",
    labels: { zone: "a" },
    inventory: {
      cpus: 8,
      memoryMiB: 4096,
      diskGiB: 100,
      diskFreeGiB: 100,
      accel: "tcg",
      arch: "x86_64",
      kernel: "k",
      hostname: "h1",
      version: "v",
    },
    at: 13,
  });
  assertEquals(plan(fsm, vm("e", "h1")).map(outcome), ["created"]);
});

Deno.test("plan.apply decides the same on a replica that rebuilt its check from the file", async () => {
  const fsm = await cluster();
  plan(fsm, vm("a", "h1"));
  const path = fsm.path;
  fsm.close();
  // Reopened: the check's index is built from the stored state, as on a restarted replica.
  const again = new StateMachine(path);
  idx = again.appliedIndex();
  assertEquals(plan(again, vm("b", "h1"), vm("c", "h1")).map(outcome), ["created", "stale"]);
  again.close();
});

Deno.test("plan.apply: a VM to stay stopped is stopped at once (its host has nothing to report); one to run is scheduled", async () => {
  const fsm = await cluster();
  plan(fsm, vm("idle", "h1"), vm("busy", "h2", { desired: "running" }));
  assertEquals(fsm.vm("idle")!.state, "stopped");
  assertEquals(fsm.vm("busy")!.state, "scheduled");
});

Deno.test("VM records read by name (kept as read) follow every write at once, and are read-only", async () => {
  const fsm = await cluster();
  assertEquals(fsm.vm("a"), null, "a miss is kept too");
  plan(fsm, vm("a", "h1"));
  assertEquals(fsm.vm("a")!.state, "stopped");
  apply(fsm, { op: "vm.desired", name: "a", desired: "running", by: "t", at: 11 });
  assertEquals(fsm.vm("a")!.desired, "running");
  apply(fsm, { op: "vm.observed", name: "a", node: "h1", state: "running", at: 12 });
  assertEquals(fsm.vm("a")!.state, "running");
  const before = fsm.vm("a")!;
  let threw = false;
  try {
    (before as { state: string }).state = "failed";
  } catch (err) {
    threw = err instanceof TypeError;
  }
  assert(threw, "a shared record cannot be changed by one reader");
  apply(fsm, { op: "vm.desired", name: "a", desired: "deleted", by: "t", at: 13 });
  apply(fsm, { op: "vm.remove", name: "a", node: "h1", at: 14 });
  assertEquals(fsm.vm("a"), null);
  // A refused create leaves nothing behind that a later read could see.
  assertEquals(plan(fsm, vm("b", "h1", { image: "nope" })).map(outcome), ["not_found"]);
  assertEquals(fsm.vm("b"), null);
});
