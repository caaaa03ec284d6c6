import { assert, assertEquals } from "../../core/testing/assert.ts";
import type { NetworkRecord } from "../../core/fsm/mod.ts";
import { eventually } from "../../tests/support/api.ts";
import type { ActualNorthbound, NorthboundChanges, SwitchRows } from "./northbound.ts";
import {
  type NorthboundDb,
  NorthboundReconciler,
  type NorthboundSource,
} from "./northbound_reconciler.ts";
import { testNetwork } from "./testing.ts";

const NO_CHANGES: NorthboundChanges = { created: [], updated: [], deleted: [] };

/** A cluster whose networks the test sets, and a northbound "database" that records writes. */
function fakeCluster() {
  const state = { leader: true, networks: [testNetwork("a")] as NetworkRecord[] };
  const listeners: ((r: string | null) => void)[] = [];
  const source: NorthboundSource = {
    isLeader: () => state.leader,
    networks: () => state.networks,
    nics: () => [],
    securityGroups: () => [],
    onChange: (l) => {
      listeners.push(l);
      return () => {};
    },
    northbound: () => "tcp:127.0.0.1:6641",
  };
  const writes: string[][] = [];
  let hold: Promise<void> | null = null;
  const db: NorthboundDb = {
    apply: async (_remotes: string, desired: SwitchRows[]) => {
      writes.push(desired.map((s) => s.name));
      if (hold) await hold;
      return NO_CHANGES;
    },
    read: () => Promise.resolve({} as ActualNorthbound),
  };
  const change = (networks: NetworkRecord[]) => {
    state.networks = networks;
    for (const l of listeners) l("network");
  };
  return {
    state,
    source,
    db,
    writes,
    change,
    holdWrites: () => {
      let release!: () => void;
      hold = new Promise((r) => (release = r));
      return () => {
        hold = null;
        release();
      };
    },
  };
}

Deno.test("northbound reconciler: a change made during a pass gets a pass of its own", async () => {
  const c = fakeCluster();
  const release = c.holdWrites();
  const r = new NorthboundReconciler(c.source, c.db, 5);
  r.start();
  try {
    await eventually("the first pass", () => Promise.resolve(c.writes.length === 1));
    c.change([testNetwork("a"), testNetwork("b", { subnet: "10.20.0.0/24" })]);
    await new Promise((res) => setTimeout(res, 50)); // its debounce fires while the pass runs
    release();
    const second = await eventually(
      "a pass that writes network b",
      () => Promise.resolve(c.writes.find((w) => w.length === 2)),
      5_000,
    );
    assertEquals(second.length, 2);
  } finally {
    r.stop();
  }
});

Deno.test("northbound reconciler: a node that becomes leader writes soon, not at the next repair", async () => {
  const c = fakeCluster();
  c.state.leader = false;
  const r = new NorthboundReconciler(c.source, c.db, 5);
  r.start();
  try {
    c.change([testNetwork("a")]);
    await new Promise((res) => setTimeout(res, 100));
    assertEquals(c.writes.length, 0, "followers never write");
    c.state.leader = true;
    await eventually("the new leader's pass", () => Promise.resolve(c.writes.length === 1), 5_000);
    assert(c.writes[0].length === 1);
  } finally {
    r.stop();
  }
});

Deno.test("northbound reconciler: routers are written after the switches, and only when they change", async () => {
  const c = fakeCluster();
  const order: string[] = [];
  const routerInput = (name: string) => ({
    name,
    snat: true,
    networks: [testNetwork("a")],
    uplink: null,
    floatingIps: [],
  });
  let routers = [routerInput("r1")];
  const db: NorthboundDb = {
    ...c.db,
    apply: (...args) => {
      order.push("switches");
      return c.db.apply(...args);
    },
    applyRouters: (_remotes, desired) => {
      order.push(`routers:${desired.map((r) => r.name).join(",")}`);
      return Promise.resolve({ created: [], updated: [], deleted: [] });
    },
  };
  const r = new NorthboundReconciler({ ...c.source, routers: () => routers }, db, 5);
  r.start();
  try {
    await eventually("the first pass", () => Promise.resolve(order.length === 2));
    assertEquals(order, ["switches", "routers:nvr-r1"]);
    // A switch-side change only: the routers are not written again.
    c.change([testNetwork("a"), testNetwork("b", { subnet: "10.20.0.0/24" })]);
    await eventually("the second pass", () => Promise.resolve(order.length === 3));
    await new Promise((res) => setTimeout(res, 50));
    assertEquals(order.slice(2), ["switches"]);
    // A router change only: the switches are not written again.
    routers = [routerInput("r1"), routerInput("r2")];
    c.change(c.state.networks);
    await eventually("the third pass", () => Promise.resolve(order.length === 4));
    assertEquals(order.slice(3), ["routers:nvr-r1,nvr-r2"]);
  } finally {
    r.stop();
  }
});
