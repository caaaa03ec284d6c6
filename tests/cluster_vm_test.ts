/**
 * What makes novactl a cluster manager, on a real 3-node loopback cluster
 * with real QEMU (TCG): placement groups under concurrency, per-node
 * explanations, live migration (shared disk and local disk over NBD), abort,
 * drain, the rebalancer, and HA failover with fencing after a host is killed
 * or partitioned. Data dirs live on tmpfs (QEMU migration needs it here).
 */
import { fetchAsNode } from "../bench/lib/tls.ts";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, sleep, step } from "./support/api.ts";
import { bootIds, counters, fetchConsole, guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";
import { haQuietWindowMs, holdsLease } from "./support/fencing.ts";

interface Vm {
  name: string;
  node: string;
  state: string;
  reason: string | null;
  migration: { opId: string } | null;
  display?: "vga" | "none" | null;
}

interface Op {
  id: string;
  state: string;
  progress: { phase?: string };
  result: Record<string, number | string | boolean> | null;
  error: string | null;
}

testWithTimeout({
  name: "cluster: groups, placement, live migration, drain, rebalance, HA with fencing",
  timeoutMs: 25 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const base = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-cvm-" });
  const keep = Deno.env.get("NOVACTL_KEEP_TEST_DIRS") === "1";
  const cluster = new NovactlCluster({
    baseDir: base,
    keepBaseDir: keep,
    env: { NOVACTL_ACCEL: "tcg", NOVACTL_FAULT_INJECTION: "1" },
  });
  await cluster.start(3);
  const token = cluster.adminToken;
  const url = () => cluster.nodes.find((n) => n.name !== "n3")!.url;
  const run = (...args: string[]) => cli([...args, "--server", url(), "--token", token]);
  const ok = async (...args: string[]) => {
    const r = await run(...args);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const show = async (name: string) =>
    (await api<Vm>(`${url()}/api/v1/vms/${name}`, { token })).body;
  const consoleOf = (name: string) => fetchConsole(url(), token, name);
  // Each node accepts fault injection from itself (its own certificate).
  const setBlocked = (name: string, blocked: string[]) =>
    fetchAsNode(cluster.node(name).dataDir, `${cluster.node(name).url}/internal/faults`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ blocked }),
    }).then((r) => r.body?.cancel());
  /** Hosts currently running a QEMU for `vm` (by pidfile and /proc). */
  const hostsRunning = async (vm: string) => {
    const out: string[] = [];
    for (const n of cluster.nodes) if ((await cluster.qemuPids(n.name)).has(vm)) out.push(n.name);
    return out;
  };

  try {
    await step(t, "setup: image and the shared pool", async () => {
      await ok(...guestImportArgs(guest, "guest"));
      await Deno.mkdir(`${base}/shared`);
      await ok("config", "set", "storage.sharedDir", `${base}/shared`);
    });

    await step(t, "a strict anti-affinity group holds under 20 concurrent creates", async () => {
      await ok("group", "create", "web", "--policy", "anti-affinity", "--strict");
      const results = await Promise.all(
        Array.from(
          { length: 20 },
          (_, i) =>
            api<Vm & { error?: { message: string } }>(`${url()}/api/v1/vms`, {
              method: "POST",
              token,
              body: { name: `web${i}`, image: "guest", group: "web", start: false, memoryMiB: 64 },
            }),
        ),
      );
      const created = results.filter((r) => r.status === 201).map((r) => r.body);
      assertEquals(created.length, 3, "one per host");
      assertEquals(new Set(created.map((v) => v.node)).size, 3);
      for (const r of results.filter((r) => r.status !== 201)) {
        assertEquals(r.status, 409);
        assert(/anti-affinity group web/.test(r.body.error!.message), r.body.error!.message);
      }
      for (const v of created) await ok("vm", "delete", v.name, "--wait");
    });

    await step(
      t,
      "an unplaceable VM gets a per-node explanation; --dry-run shows scores",
      async () => {
        await ok("node", "cordon", "n3");
        const r = await run("vm", "create", "huge", "--image", "guest", "--memory", "2000G");
        assertEquals(r.code, 1);
        assert(/n1: memory \d+ MiB free < 2048000 MiB requested/.test(r.stderr), r.stderr);
        assert(/n2: memory/.test(r.stderr) && /n3: cordoned/.test(r.stderr), r.stderr);
        const dry = JSON.parse(
          await ok("vm", "create", "d1", "--image", "guest", "--dry-run", "-o", "json"),
        );
        assertEquals(Object.keys(dry.scores).sort(), ["n1", "n2"]);
        assertEquals(dry.rejected.n3, "cordoned");
        assertEquals(
          (await api(`${url()}/api/v1/vms/d1`, { token })).status,
          404,
          "dry run records nothing",
        );
        await ok("node", "uncordon", "n3");
      },
    );

    await step(t, "live migration over NBD (local disk) keeps the guest running", async () => {
      await ok("vm", "create", "m1", "--image", "guest", "--node", "n1", "--wait");
      await eventually(
        "m1 counting",
        async () => counters(await consoleOf("m1")).length >= 2,
        60_000,
      );
      const before = Math.max(...counters(await consoleOf("m1")));
      assertEquals((await show("m1")).display, "vga", "a fresh VM has a display");
      const op = JSON.parse(await ok("vm", "migrate", "m1", "--to", "n2", "-o", "json")) as Op;
      assertEquals(op.state, "succeeded");
      assertEquals(op.result!.disksMirrored, 1);
      assert(Number(op.result!.qemuDowntimeMs) < 1000, JSON.stringify(op.result));
      const vm = await show("m1");
      assertEquals([vm.node, vm.state], ["n2", "running"]);
      assertEquals(await hostsRunning("m1"), ["n2"]);
      const after = await eventually("counter moving on n2", async () => {
        const c = counters(await consoleOf("m1"));
        return Math.max(...c) >= before + 2 ? c : undefined;
      }, 30_000);
      // One counting sequence that never went back: the guest kept its memory across hosts.
      assert(after.every((n, i) => i === 0 || n >= after[i - 1]), `counters: ${after.join(",")}`);
      // The console history moved along: one boot (the original), no second one.
      assertEquals(bootIds(await consoleOf("m1")).length, 1, "no reboot on the destination");
      // The destination was launched with the source's display device (else QEMU refuses the
      // stream), and says so.
      await eventually("n2 reports m1's display", async () => (await show("m1")).display === "vga");
    });

    await step(t, "a shared-disk VM migrates without copying its disk", async () => {
      await ok(
        "vm",
        "create",
        "s1",
        "--image",
        "guest",
        "--node",
        "n1",
        "--pool",
        "shared",
        "--wait",
      );
      const op = JSON.parse(await ok("vm", "migrate", "s1", "-o", "json")) as Op;
      assertEquals([op.state, op.result!.disksMirrored], ["succeeded", 0]);
      assert((await show("s1")).node !== "n1");
    });

    await step(
      t,
      "abort leaves the VM running on the source and nothing on the destination",
      async () => {
        await ok("config", "set", "migration.maxBandwidthMiBs", "1");
        const op = JSON.parse(
          await ok("vm", "migrate", "m1", "--to", "n3", "--no-wait", "-o", "json"),
        ) as Op;
        await eventually("migration under way", async () => {
          const o = (await api<Op>(`${url()}/api/v1/operations/${op.id}`, { token })).body;
          return o.progress.phase === "disks" || o.progress.phase === "memory";
        }, 30_000);
        await ok("operation", "abort", op.id);
        const end =
          (await api<Op>(`${url()}/api/v1/operations/${op.id}/wait?timeoutMs=30000`, { token }))
            .body;
        assertEquals(end.state, "aborted");
        await ok("config", "set", "migration.maxBandwidthMiBs", "10240");
        const vm = await eventually("m1 back to running", async () => {
          const v = await show("m1");
          return v.state === "running" && !v.migration ? v : undefined;
        });
        assertEquals(vm.node, "n2");
        await eventually(
          "nothing left on n3",
          async () => (await hostsRunning("m1")).join() === "n2",
        );
        const leftovers = [...Deno.readDirSync(`${cluster.node("n3").dataDir}/pool`)]
          .filter((e) => e.name.startsWith("m1-"));
        assertEquals(leftovers, []);
      },
    );

    await step(t, "cold migration moves a stopped VM's local disk", async () => {
      await ok("vm", "create", "cold1", "--image", "guest", "--node", "n1", "--wait");
      await ok("vm", "stop", "cold1", "--wait");
      const vm0 = await api<{ disks: { volume: string }[] }>(`${url()}/api/v1/vms/cold1`, {
        token,
      });
      const volume = `${vm0.body.disks[0].volume}.qcow2`;
      const op = JSON.parse(await ok("vm", "migrate", "cold1", "--to", "n3", "-o", "json")) as Op;
      assertEquals([op.state, op.result!.live], ["succeeded", false]);
      await Deno.stat(`${cluster.node("n3").dataDir}/pool/${volume}`);
      const gone = await Deno.stat(`${cluster.node("n1").dataDir}/pool/${volume}`).then(
        () => false,
        () => true,
      );
      assert(gone, "the source copy is removed");
      await ok("vm", "start", "cold1", "--wait");
      assertEquals((await show("cold1")).node, "n3");
      await ok("vm", "delete", "cold1", "--force", "--wait");
    });

    await step(t, "drain empties a node", async () => {
      await ok("node", "drain", "n2");
      const vms = (await api<{ vms: Vm[] }>(`${url()}/api/v1/vms`, { token })).body.vms;
      assertEquals(vms.filter((v) => v.node === "n2"), []);
      const nodes =
        (await api<{ nodes: { name: string; state: string }[] }>(`${url()}/api/v1/nodes`, {
          token,
        })).body.nodes;
      assertEquals(nodes.find((n) => n.name === "n2")!.state, "drained");
      assertEquals((await cluster.qemuPids("n2")).size, 0);
      await ok("node", "uncordon", "n2");
    });

    await step(t, "the rebalancer evens out a skewed cluster", async () => {
      for (const v of ["m1", "s1"]) await ok("vm", "delete", v, "--force", "--wait");
      await ok("config", "set", "rebalancer.threshold", "0.001");
      for (let i = 0; i < 3; i++) {
        await ok(
          "vm",
          "create",
          `r${i}`,
          "--image",
          "guest",
          "--node",
          "n1",
          "--memory",
          "256M",
          "--pool",
          "shared",
          "--wait",
        );
      }
      const dry = JSON.parse(await ok("cluster", "rebalance", "--dry-run", "-o", "json"));
      assertEquals(dry.moves.length, 2, JSON.stringify(dry));
      await ok("cluster", "rebalance");
      const nodes = new Set(
        (await api<{ vms: Vm[] }>(`${url()}/api/v1/vms`, { token })).body.vms
          .filter((v) => v.name.startsWith("r")).map((v) => v.node),
      );
      assertEquals(nodes.size, 3, "one per host");
      for (let i = 0; i < 3; i++) await ok("vm", "delete", `r${i}`, "--force", "--wait");
      await ok("config", "set", "rebalancer.threshold", "0.2");
    });

    await step(t, "kill -9 a host: its HA VM runs elsewhere within 10 s, never twice", async () => {
      await ok("vm", "create", "ha1", "--image", "guest", "--ha", "--node", "n3", "--wait");
      const killedAt = Date.now();
      await Promise.all([cluster.kill("n3"), cluster.killQemus("n3")]);
      let maxConcurrent = 0;
      const vm = await eventually("ha1 running elsewhere", async () => {
        maxConcurrent = Math.max(maxConcurrent, (await hostsRunning("ha1")).length);
        const v = await show("ha1");
        return v.node !== "n3" && v.state === "running" ? v : undefined;
      }, 30_000);
      const tookMs = Date.now() - killedAt;
      console.log(`HA: ha1 running on ${vm.node} ${tookMs} ms after the kill`);
      assert(tookMs < 10_000, `took ${tookMs} ms`);
      assert(maxConcurrent <= 1);
      assertEquals(await hostsRunning("ha1"), [vm.node]);
      await cluster.restart("n3");
      const n3Dir = cluster.node("n3").dataDir;
      await eventually("n3 holds its lease again", () => holdsLease(n3Dir), 30_000);
      await sleep(await haQuietWindowMs(url(), token));
      assertEquals(await hostsRunning("ha1"), [vm.node], "n3 does not restart it when it returns");
      await ok("vm", "delete", "ha1", "--force", "--wait");
    });

    await step(t, "a partitioned host fences its HA VM before it starts elsewhere", async () => {
      await ok("vm", "create", "ha2", "--image", "guest", "--ha", "--node", "n3", "--wait");
      await setBlocked("n3", ["n1", "n2"]);
      await setBlocked("n1", ["n3"]);
      await setBlocked("n2", ["n3"]);
      const samples: string[][] = [];
      let fencedAt = 0;
      let startedElsewhereAt = 0;
      const t0 = Date.now();
      while (Date.now() - t0 < 30_000) {
        const where = await hostsRunning("ha2");
        samples.push(where);
        if (!fencedAt && !where.includes("n3")) fencedAt = Date.now() - t0;
        if (!startedElsewhereAt && where.some((h) => h !== "n3")) {
          startedElsewhereAt = Date.now() - t0;
        }
        if (startedElsewhereAt && (await show("ha2")).state === "running") break;
        await sleep(50);
      }
      console.log(
        `partition: fenced on n3 after ${fencedAt} ms, started elsewhere after ${startedElsewhereAt} ms`,
      );
      assert(
        fencedAt > 0 && startedElsewhereAt > 0,
        JSON.stringify({ fencedAt, startedElsewhereAt }),
      );
      assert(fencedAt < startedElsewhereAt, "fenced first");
      assert(samples.every((s) => s.length <= 1), "never on two hosts");
      for (const n of ["n1", "n2", "n3"]) await setBlocked(n, []);
      const n3Dir = cluster.node("n3").dataDir;
      await eventually("n3 holds its lease again", () => holdsLease(n3Dir), 30_000);
      await sleep(await haQuietWindowMs(url(), token));
      const final = await hostsRunning("ha2");
      assertEquals(final.length, 1);
      assert(final[0] !== "n3");
    });
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
    if (!keep) await Deno.remove(base, { recursive: true }).catch(() => {});
  }
});
