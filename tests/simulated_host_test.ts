/**
 * `node start --simulated-host`: real nodes (Raft, leases, reports, API) whose host
 * part is a simulation — the inventory from flags, VMs reported as converged
 * without QEMU. What scale tests and bench:api's start/stop case stand on.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { requestJson, waitFor } from "../bench/lib/util.ts";
import { createVms, importTinyKernel, simulatedHostArgs } from "../bench/lib/simulated.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Vm {
  name: string;
  node: string;
  state: string;
}

/** Pids of the processes whose command line passes `test`. */
async function pidsWhere(test: (cmdline: string) => boolean): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (test(cmd)) pids.push(Number(e.name));
  }
  return pids;
}

/** Pids of QEMU processes whose command line names `dir`. */
function qemusUnder(dir: string): Promise<number[]> {
  return pidsWhere((cmd) => cmd.startsWith("qemu-system") && cmd.includes(dir));
}

/** Processes whose command line contains every one of `words`. */
function processesWith(...words: string[]): Promise<number[]> {
  return pidsWhere((cmd) => words.every((w) => cmd.includes(w)));
}

/** `call(method, path, body)` against the leader as admin; anything but a 2xx fails the test. */
function leaderCaller(cluster: NovactlCluster) {
  return async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const r = await requestJson<T>(`${await cluster.leaderUrl()}${path}`, {
      method,
      body,
      token: cluster.adminToken,
      timeoutMs: 30_000,
    });
    assert(
      r.status >= 200 && r.status < 300,
      `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`,
    );
    return r.body as T;
  };
}

testWithTimeout({
  name: "simulated hosts: their flags' inventory, marked; VMs run, stop and go without QEMU",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cluster = new NovactlCluster({
    extraNodeArgs: simulatedHostArgs(512, 1_048_576),
  });
  await cluster.start(3);
  const token = cluster.adminToken;
  const call = leaderCaller(cluster);
  const states = async () => (await call<{ vms: Vm[] }>("GET", "/api/v1/vms")).vms;
  try {
    const { nodes } = await call<{ nodes: { inventory: { cpus: number; version: string } }[] }>(
      "GET",
      "/api/v1/nodes",
    );
    assertEquals(nodes.length, 3);
    for (const n of nodes) {
      assertEquals(n.inventory.cpus, 512);
      assert(n.inventory.version.endsWith("(simulated host)"), n.inventory.version);
    }
    await importTinyKernel(cluster, "sim");
    // 600 vCPUs: more than this 2-CPU machine could ever run, placed on 3 × 512.
    await Promise.all(Array.from({ length: 150 }, (_, i) =>
      call("POST", "/api/v1/vms", {
        name: `s${i}`,
        image: "sim",
        cpus: 4,
        memoryMiB: 1024,
      })));
    await waitFor(async () => (await states()).every((v) => v.state === "running") || undefined, {
      timeoutMs: 120_000,
      description: "150 simulated VMs running",
    });
    assertEquals(new Set((await states()).map((v) => v.node)).size, 3, "placed on every host");
    assertEquals(await qemusUnder(cluster.baseDir), [], "no QEMU runs for them");
    // The CLI's list filters go to the server, and every page comes back.
    const listed = async (...filters: string[]) =>
      (JSON.parse(
        await cluster.cli([
          "vm",
          "list",
          ...filters,
          "-o",
          "json",
          "--server",
          await cluster.leaderUrl(),
          "--token",
          token,
        ]),
      ) as { vms: Vm[] }).vms;
    const onN1 = (await states()).filter((v) => v.node === "n1").map((v) => v.name).sort();
    assertEquals((await listed("--node", "n1")).map((v) => v.name).sort(), onN1);
    assertEquals((await listed("--state", "running")).length, 150);
    assertEquals((await listed("--state", "stopped")).length, 0);
    await Promise.all(
      Array.from({ length: 150 }, (_, i) => call("POST", `/api/v1/vms/s${i}/stop`)),
    );
    await waitFor(async () => (await states()).every((v) => v.state === "stopped") || undefined, {
      timeoutMs: 120_000,
      description: "150 simulated VMs stopped",
    });
    // Through a follower: a start answers 202 naming its operation (Location survives the
    // forward), which ends once the simulated host reports the VM running; so does a restart.
    await waitFor(
      async () =>
        (await call<{ level: number }>("GET", "/api/v1/cluster")).level === 2 || undefined,
      {
        timeoutMs: 60_000,
        description: "cluster level 2 (every member on 0.2.0)",
      },
    );
    const leader = await cluster.leaderUrl();
    const follower = cluster.urls.find((u) => u !== leader)!;
    const viaFollower = async (method: string, path: string) => {
      const res = await cluster.fetch(`${follower}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}` },
      });
      return { status: res.status, location: res.headers.get("location"), body: await res.json() };
    };
    for (const action of ["start", "restart"]) {
      const r = await viaFollower("POST", `/api/v1/vms/s0/${action}`);
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals(r.location, `/api/v1/operations/${r.body.operation.id}`);
      assertEquals([r.body.name, r.body.operation.kind], ["s0", action]);
      const op = await viaFollower("GET", `${r.location}/wait?timeoutMs=60000`);
      assertEquals([op.status, op.body.state], [200, "succeeded"], JSON.stringify(op.body));
    }
    await Promise.all(
      Array.from({ length: 150 }, (_, i) => call("DELETE", `/api/v1/vms/s${i}?force=true`)),
    );
    await waitFor(async () => (await states()).length === 0 || undefined, {
      timeoutMs: 120_000,
      description: "150 simulated VMs removed by their hosts",
    });
  } finally {
    await cluster.stop();
  }
});

testWithTimeout({
  name:
    "a node joining a cluster with a long log (10,000 VMs, no recent snapshot) catches up and stays a member",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cluster = new NovactlCluster({
    extraNodeArgs: simulatedHostArgs(65_536, 1 << 30),
  });
  await cluster.start(3);
  try {
    const token = cluster.adminToken;
    await importTinyKernel(cluster, "k");
    await createVms(cluster, 10_000, 64, (i) => ({
      name: `vm${i}`,
      image: "k",
      start: false,
      memoryMiB: 64,
    }));
    // The joiner applies the additions of n2 and n3 long before its own; it must not take
    // "not a member yet" for "removed" (it did, and shut itself down).
    const n4 = await cluster.addNode({ name: "n4" });
    const status = await cluster.status();
    assert(status.members.some((m) => m.name === "n4"), JSON.stringify(status.members));
    await waitFor(async () => {
      const r = await requestJson<{ vms: unknown[] }>(`${n4.url}/api/v1/vms?limit=1000`, { token });
      return r.body?.vms?.length === 1000 || undefined;
    }, { timeoutMs: 120_000, description: "n4 answering from its own caught-up replica" });
    const after = await cluster.status();
    assert(after.members.some((m) => m.name === "n4"), "n4 is still a member");
  } finally {
    await cluster.stop();
  }
});

testWithTimeout({
  name:
    "node simulate-hosts: many whole members in one process, each with its own identity; VMs run on them; an unchanged inventory is not rewritten; SIGTERM stops them all",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cluster = new NovactlCluster({ extraNodeArgs: simulatedHostArgs(512, 1_048_576) });
  await cluster.start(1);
  const call = leaderCaller(cluster);
  try {
    // Registrations are checked every second from here on: only a change may be written.
    // n1 stays the only voter: stopping the simulated hosts below must not take the quorum.
    await call("PATCH", "/api/v1/config", {
      "cluster.maxVoters": 1,
      "nodes.inventoryRefreshMs": 1_000,
      "scheduler.overcommit.cpu": 1,
    });
    const group = await cluster.addSimulatedHosts(8, "sim", ["--simulated-cpus", "16"]);
    assertEquals(group.names, ["sim1", "sim2", "sim3", "sim4", "sim5", "sim6", "sim7", "sim8"]);
    assertEquals(await processesWith("simulate-hosts", group.dataDir), [group.process!.pid]);
    assertEquals(await processesWith("watchdog", group.dataDir), [], "no watchdog for them");
    type NodeRow = { name: string; url: string; updatedAt: string; inventory: Inventory };
    type Inventory = { cpus: number; version: string; pool?: unknown } | null;
    const sims = async () =>
      (await call<{ nodes: NodeRow[] }>("GET", "/api/v1/nodes")).nodes
        .filter((n) => n.name.startsWith("sim"));
    const registered = await waitFor(async () => {
      const rows = await sims();
      // Its own registration (with its pool), after the one its join made.
      const marked = (n: NodeRow) =>
        n.inventory?.version.endsWith("(simulated host)") && n.inventory.pool;
      return rows.length === 8 && rows.every(marked) ? rows : undefined;
    }, { timeoutMs: 60_000, description: "8 simulated hosts registered" });
    assertEquals(new Set(registered.map((n) => n.url)).size, 8, "a listener each");
    for (const n of registered) {
      assertEquals(n.inventory!.cpus, 16);
      assert(n.inventory!.version.endsWith("(simulated host)"), n.inventory!.version);
    }
    await waitFor(async () => {
      const s = await cluster.status();
      return group.names.every((n) => s.members.find((m) => m.name === n)?.state === "ready") ||
        undefined;
    }, { timeoutMs: 30_000, description: "every simulated host running and heard from" });
    // Each member proves its own identity: its certificate names it, not the process.
    const certs = await Promise.all(
      group.names.map((n) => Deno.readTextFile(`${group.dataDir}/${n}/tls/node.crt`)),
    );
    assertEquals(new Set(certs).size, 8);

    // n1 takes nothing, and without overcommit the 16 VMs of 8 vCPUs fill the 8 simulated hosts
    // of 16 CPUs exactly: two on each.
    await call("POST", "/api/v1/nodes/n1/cordon");
    await importTinyKernel(cluster, "k");
    await Promise.all(
      Array.from(
        { length: 16 },
        (_, i) =>
          call("POST", "/api/v1/vms", { name: `v${i}`, image: "k", cpus: 8, memoryMiB: 64 }),
      ),
    );
    const vms = await waitFor(async () => {
      const list = (await call<{ vms: Vm[] }>("GET", "/api/v1/vms")).vms;
      return list.every((v) => v.state === "running") ? list : undefined;
    }, { timeoutMs: 60_000, description: "16 VMs running on simulated hosts" });
    const perHost = Object.groupBy(vms, (v) => v.node);
    assertEquals(Object.keys(perHost).sort(), [...group.names].sort());
    assert(Object.values(perHost).every((on) => on!.length === 2), JSON.stringify(perHost));

    const before = new Map((await sims()).map((n) => [n.name, n.updatedAt]));
    await new Promise((r) => setTimeout(r, 3_500));
    for (const n of await sims()) {
      assertEquals(n.updatedAt, before.get(n.name), `${n.name}'s unchanged inventory rewritten`);
    }

    assertEquals((await group.process!.stop(10_000)).code, 0, "stopped on SIGTERM, exit 0");
    await waitFor(async () => {
      const s = await cluster.status();
      return group.names.every((n) => s.members.find((m) => m.name === n)?.state === "offline") ||
        undefined;
    }, { timeoutMs: 30_000, description: "the stopped simulated hosts offline" });

    // Back with their VMs in place (no tokens needed): they catch up and report them as
    // running; nothing of the real host side runs for them (it once started real QEMUs).
    await cluster.restartSimulatedHosts(group);
    await waitFor(async () => {
      const list = (await call<{ vms: Vm[] }>("GET", "/api/v1/vms")).vms;
      return list.length === 16 && list.every((v) => v.state === "running") || undefined;
    }, { timeoutMs: 60_000, description: "the 16 VMs running after the restart" });
    // Once caught up, a real host side would take them for crashed and start QEMUs.
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 500));
      assertEquals(await qemusUnder(cluster.baseDir), [], "no QEMU runs for simulated hosts");
      const list = (await call<{ vms: Vm[] }>("GET", "/api/v1/vms")).vms;
      assert(list.every((v) => v.state === "running"), JSON.stringify(list));
    }
  } finally {
    await cluster.stop();
  }
});
