/**
 * The planner on a real one-voter leader: optimistic placement that never
 * over-commits a host or breaks a strict group at any concurrency, batches
 * its decisions, and keeps its reservations equal to what the VMs hold.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import { ConflictError } from "../errors/mod.ts";
import type { Command, VmRecord } from "../fsm/mod.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { createVm, hostViews, plannerOf, setVmDesired } from "./vm_service.ts";
import { Planner } from "./planner.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const opts = { timeoutMs: 3 * MINUTE, sanitizeOps: false, sanitizeResources: false };

/** n1, n2, n3 with `cpus` each and no overcommit, so capacity is exact. */
async function threeHosts(cpus: number): Promise<TestCluster> {
  const c = await TestCluster.start({ cpus });
  await c.addHost("n2", { cpus });
  await c.addHost("n3", { cpus });
  await c.patchConfig({ "scheduler.overcommit.cpu": 1 });
  await c.until("three ready hosts", () => hostViews(c.node).every((h) => h.state === "ready"));
  return c;
}

const request = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  image: "img",
  start: false,
  ha: false,
  labels: {},
  memoryMiB: 64,
  ...extra,
});

/** CPUs held per host by the VMs in the applied state (deleted ones hold nothing). */
function heldCpus(vms: VmRecord[]): Record<string, number> {
  const held: Record<string, number> = { n1: 0, n2: 0, n3: 0 };
  for (const vm of vms) {
    if (vm.node && vm.desired !== "deleted" && !vm.template) held[vm.node] += vm.cpus;
  }
  return held;
}

testWithTimeout({
  name:
    "planner: 200 concurrent creates into a strict anti-affinity group yield 3 VMs and 197 explained 409s, during a start storm",
  ...opts,
}, async () => {
  const c = await threeHosts(64);
  try {
    await c.node.propose({
      op: "group.create",
      group: { name: "web", policy: "anti-affinity", strict: true },
      by: "test",
      at: Date.now(),
    });
    for (let i = 0; i < 12; i++) await createVm(c.node, request(`s${i}`), "test");
    let storming = true;
    const storm = (async () => {
      let flips = 0;
      while (storming) {
        await Promise.all(
          Array.from(
            { length: 12 },
            (_, i) => setVmDesired(c.node, `s${i}`, flips % 2 ? "stopped" : "running", "test"),
          ),
        );
        flips++;
      }
      return flips;
    })();
    const outcomes = await Promise.allSettled(
      Array.from(
        { length: 200 },
        (_, i) => createVm(c.node, request(`web${i}`, { group: "web" }), "test"),
      ),
    );
    storming = false;
    assert(await storm > 0, "the start storm ran alongside");
    const created = outcomes.flatMap((o) => o.status === "fulfilled" ? [o.value] : []);
    assertEquals(created.length, 3);
    assertEquals(new Set(created.map((v) => v.node)).size, 3, "one per host");
    const refused = outcomes.flatMap((o) => o.status === "rejected" ? [o.reason] : []);
    assertEquals(refused.length, 197);
    for (const err of refused) {
      assert(err instanceof ConflictError, String(err));
      assert(/anti-affinity group web: already runs/.test(err.message), err.message);
    }
    // Its own reservations kept the planner right: the apply-time check refused nothing.
    assertEquals(plannerOf(c.node).refusedAtApply, 0);
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  name:
    "planner: randomized concurrent creates and deletes end with every host within capacity and reservations equal to the VMs",
  ...opts,
}, async () => {
  const c = await threeHosts(6);
  try {
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    let made = 0;
    let peak = 0;
    for (let wave = 0; wave < 8; wave++) {
      const live = c.node.fsm.vms().filter((v) => v.desired !== "deleted").map((v) => v.name);
      await Promise.allSettled(Array.from({ length: 40 }, () => {
        if (live.length && random() < 0.35) {
          const victim = live.splice(Math.floor(random() * live.length), 1)[0];
          return setVmDesired(c.node, victim, "deleted", "test", { force: true });
        }
        return createVm(
          c.node,
          request(`r${made++}`, { cpus: 1 + Math.floor(random() * 2) }),
          "test",
        );
      }));
      const held = heldCpus(c.node.fsm.vms());
      for (const host of ["n1", "n2", "n3"]) {
        assert(held[host] <= 6, `wave ${wave}: ${host} holds ${held[host]} CPUs of 6`);
      }
      peak = Math.max(peak, held.n1 + held.n2 + held.n3);
    }
    assertEquals(peak, 18, "the hosts were filled to the last CPU at some point");
    assertEquals(plannerOf(c.node).refusedAtApply, 0, "no decision was made on a stale view");
    const held = heldCpus(c.node.fsm.vms());
    for (const host of ["n1", "n2", "n3"]) {
      assertEquals(
        plannerOf(c.node).usage(host)?.used.cpus,
        held[host],
        `${host}: reservations = VMs`,
      );
    }
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  name: "planner: many concurrent creates travel in few entries",
  ...opts,
}, async () => {
  const c = await threeHosts(64);
  try {
    const plans: number[] = [];
    const propose = c.node.propose.bind(c.node);
    c.node.propose = (cmd: Command) => {
      if (cmd.op === "plan.apply") plans.push(cmd.creates.length);
      return propose(cmd);
    };
    const created = await Promise.all(
      Array.from({ length: 100 }, (_, i) => createVm(c.node, request(`b${i}`), "test")),
    );
    assertEquals(created.length, 100);
    assertEquals(plans.reduce((a, b) => a + b, 0), 100);
    assert(plans.length <= 10, `100 creates in ${plans.length} entries: ${plans.join(", ")}`);
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  name:
    "planner: two planners that cannot see each other's decisions still never over-commit (the apply-time check)",
  ...opts,
}, async () => {
  const c = await threeHosts(2);
  try {
    // A second planner on the same leader plays a stale or buggy decider: neither sees the
    // other's reservations, so both hand out the same free CPUs.
    const blind = new Planner(c.node, () => hostViews(c.node));
    const spec = (name: string) => ({
      name,
      uuid: crypto.randomUUID(),
      image: "img",
      cpus: 1,
      memoryMiB: 64,
      node: null,
      ha: false,
      labels: {},
      desired: "stopped" as const,
      restartPolicy: "never" as const,
      disks: [],
      cloudInit: null,
      template: false,
      generation: 0,
      snapshots: [],
    });
    const outcomes = await Promise.allSettled([
      ...Array.from({ length: 6 }, (_, i) => plannerOf(c.node).create(spec(`p${i}`), {}, "test")),
      ...Array.from({ length: 6 }, (_, i) => blind.create(spec(`q${i}`), {}, "test")),
    ]);
    const created = outcomes.filter((o) => o.status === "fulfilled").length;
    assertEquals(created, 6, "exactly the 6 CPUs there are");
    assert(
      plannerOf(c.node).refusedAtApply + blind.refusedAtApply > 0,
      "the two blind planners handed out the same CPUs, and the check refused the extras",
    );
    const held = heldCpus(c.node.fsm.vms());
    assertEquals(held, { n1: 2, n2: 2, n3: 2 });
    for (const o of outcomes) {
      if (o.status === "rejected") {
        assert(/no host can run|no longer fits/.test(String(o.reason)), String(o.reason));
      }
    }
  } finally {
    await c.stop();
  }
});
