/**
 * HA fencing that does not depend on the node process, on a real 3-node
 * cluster with real QEMU (TCG) and the test guest on the shared pool. Every
 * scenario samples, every ~100 ms, the QEMU processes of the VM on the whole
 * machine (by its uuid in /proc/PID/cmdline, whichever host's data dir they
 * belong to): the guest must never run in two QEMUs at once.
 *
 * (a) the host's node process is SIGKILLed (its QEMU survives at first)
 * (b) the node process is SIGSTOPped past its lease, then continued
 * (c) the host's fencing watchdog is SIGKILLed
 * (d) the node process restarts inside the lease: its VMs keep running
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { isAlive, type QemuCopy, qemusOf } from "../bench/lib/qemu_procs.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, sleep, step } from "./support/api.ts";
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { WatchdogClient } from "../host/fencing/mod.ts";
import { bootTimeMs, FENCE_MARGIN_MS } from "../core/cluster/lease.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";
import { parsePasswd, QEMU_USER } from "../host/kvm/confine.ts";
import { fenceInMs as fenceInMsOf, haQuietWindowMs } from "./support/fencing.ts";

interface Vm {
  name: string;
  uuid: string;
  node: string;
  state: string;
  desired: string;
  reason: string | null;
}

/** Samples the VM's QEMUs in the background until stopped; remembers any moment with two. */
function sampleCopies(uuid: string) {
  const state = { samples: 0, doubles: [] as QemuCopy[][], running: true };
  const done = (async () => {
    while (state.running) {
      const copies = await qemusOf(uuid);
      state.samples++;
      if (copies.length > 1) state.doubles.push(copies);
      await sleep(100);
    }
  })();
  return {
    async stop() {
      state.running = false;
      await done;
      return state;
    },
  };
}

testWithTimeout({
  name: "HA fencing survives the node process: kill, stop, watchdog kill, quick restart",
  timeoutMs: 20 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const base = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-fence-" });
  const keep = Deno.env.get("NOVACTL_KEEP_TEST_DIRS") === "1";
  const cluster = new NovactlCluster({
    baseDir: base,
    keepBaseDir: keep,
    env: { NOVACTL_ACCEL: "tcg" },
  });
  await cluster.start(3);
  const token = cluster.adminToken;
  const live = new Set(["n1", "n2", "n3"]);
  const url = () => cluster.node([...live][0]).url;
  const ok = async (...args: string[]) => {
    const r = await cli([...args, "--server", url(), "--token", token]);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const show = async (name: string) =>
    (await api<Vm>(`${url()}/api/v1/vms/${name}`, { token })).body;
  /** A host that is not the leader: losing it leaves the cluster's quorum and leader alone. */
  const follower = async () => {
    const leader = await cluster.leaderName();
    return ["n1", "n2", "n3"].find((n) => n !== leader)!;
  };
  // Nodes run as root here: QEMU drops to the unprivileged user, HA QEMUs included.
  const qemuUid = Deno.uid() === 0
    ? parsePasswd(await Deno.readTextFile("/etc/passwd"), QEMU_USER)?.uid
    : Deno.uid();
  assert(qemuUid !== undefined && qemuUid !== 0, `${QEMU_USER} exists (scripts/setup.sh)`);
  /** Creates an HA VM on `host` and returns it with its (single) QEMU. */
  const haVm = async (name: string, host: string) => {
    await ok("vm", "create", name, "--image", "guest", "--ha", "--node", host, "--wait");
    const vm = await show(name);
    const copies = await qemusOf(vm.uuid);
    assertEquals(copies.map((c) => c.host), [host]);
    assertEquals(copies[0].uid, qemuUid, `the HA QEMU of ${name} runs as ${QEMU_USER}`);
    return { vm, pid: copies[0].pid };
  };
  const runningElsewhere = (name: string, host: string) =>
    eventually(`${name} running on a host other than ${host}`, async () => {
      const v = await show(name);
      return v.node !== host && v.state === "running" ? v : undefined;
    }, 60_000);
  /** A restarted or resumed host may run HA VMs again once it renewed its lease (its watchdog says so). */
  const backInService = (host: string) =>
    eventually(`${host} holds its lease again`, async () => {
      const hello = await WatchdogClient.probe(cluster.node(host).dataDir);
      return hello !== null && hello.fenceAt > bootTimeMs() + 1_000;
    }, 30_000);
  const fenceInMs = (host: string) => fenceInMsOf(cluster.node(host).dataDir);
  const quietWindowMs = () => haQuietWindowMs(url(), token);
  /** Waits until every live host has been fed under a lease of at most `leaseMs`. */
  const renewedUnder = (leaseMs: number, hosts: string[]) =>
    eventually(`${hosts.join(", ")} renewed under a ${leaseMs} ms lease`, async () => {
      for (const host of hosts) {
        const left = await fenceInMs(host);
        // Fed at most `leaseMs` minus the margin ahead; the old, longer lease gives more.
        if (left === null || left <= 0 || left > leaseMs - FENCE_MARGIN_MS) return false;
      }
      return true;
    }, 30_000);
  /** Times the two moments that matter after a fault: the old QEMU gone, the VM running elsewhere. */
  const timeFailover = async (name: string, host: string, pid: number, t0: number) => {
    await eventually(`the QEMU on ${host} gone`, () => Promise.resolve(!isAlive(pid)), 60_000);
    const fencedMs = Math.round(performance.now() - t0);
    const moved = await runningElsewhere(name, host);
    const movedMs = Math.round(performance.now() - t0);
    return { moved, fencedMs, movedMs };
  };
  try {
    await step(t, "setup: guest image, shared pool, a short lease", async () => {
      await ok(...guestImportArgs(guest, "guest"));
      await Deno.mkdir(`${base}/shared`);
      await ok("config", "set", "storage.sharedDir", `${base}/shared`);
      await ok("config", "set", "ha.leaseMs", "4000");
      await renewedUnder(4_000, [...live]);
    });

    await step(t, "(a) SIGKILL the node process: the VM moves, never in two QEMUs", async () => {
      const host = await follower();
      const { vm, pid } = await haVm("ha-a", host);
      const sampler = sampleCopies(vm.uuid);
      const t0 = performance.now();
      await cluster.kill(host, "SIGKILL");
      live.delete(host);
      assert(isAlive(pid), "the QEMU outlives its node process (VMs do by design)");
      const { moved, fencedMs, movedMs } = await timeFailover("ha-a", host, pid, t0);
      console.log(
        `(a) QEMU killed by the watchdog after ${fencedMs} ms, running on ${moved.node} after ${movedMs} ms`,
      );
      await cluster.restart(host);
      live.add(host);
      await backInService(host);
      await sleep(await quietWindowMs());
      const s = await sampler.stop();
      console.log(`(a) ${s.samples} samples`);
      assertEquals(s.doubles, [], "two QEMUs ran the guest at once");
      assertEquals((await qemusOf(vm.uuid)).map((c) => c.host), [moved.node]);
    });

    await step(
      t,
      "(b) SIGSTOP the node past its lease, SIGCONT: moved, not restarted",
      async () => {
        const host = await follower();
        const { vm, pid } = await haVm("ha-b", host);
        const sampler = sampleCopies(vm.uuid);
        const t0 = performance.now();
        await cluster.kill(host, "SIGSTOP");
        live.delete(host);
        let moved: Vm;
        try {
          const timed = await timeFailover("ha-b", host, pid, t0);
          moved = timed.moved;
          console.log(
            `(b) QEMU killed by the watchdog after ${timed.fencedMs} ms, running on ${moved.node} after ${timed.movedMs} ms`,
          );
        } finally {
          await cluster.kill(host, "SIGCONT");
          live.add(host);
        }
        // The resumed node renews its lease and reconciles: its old copy must stay dead.
        await backInService(host);
        await sleep(await quietWindowMs());
        const s = await sampler.stop();
        console.log(`(b) ${s.samples} samples; now on ${moved.node}`);
        assertEquals(s.doubles, [], "two QEMUs ran the guest at once");
        assertEquals((await qemusOf(vm.uuid)).map((c) => c.host), [moved.node]);
        assertEquals((await show("ha-b")).node, moved.node);
      },
    );

    await step(
      t,
      "(c) SIGKILL the watchdog: its HA QEMUs die with it, restart elsewhere",
      async () => {
        const host = await follower();
        const { vm, pid } = await haVm("ha-c", host);
        const sampler = sampleCopies(vm.uuid);
        // The node is frozen meanwhile: only the kernel can kill the QEMU (PR_SET_PDEATHSIG
        // of its PID namespace's init, then the namespace teardown).
        await cluster.kill(host, "SIGSTOP");
        const t0 = performance.now();
        try {
          await cluster.killWatchdog(host);
          await eventually(
            "the QEMU died with its watchdog",
            () => Promise.resolve(!isAlive(pid)),
            3_000,
          );
        } finally {
          await cluster.kill(host, "SIGCONT");
        }
        const diedMs = Math.round(performance.now() - t0);
        const moved = await runningElsewhere("ha-c", host);
        console.log(
          `(c) QEMU died with its watchdog after ${diedMs} ms, running on ${moved.node} after ${
            Math.round(performance.now() - t0)
          } ms`,
        );
        // With a new watchdog, the host renews again after sitting out a lease; ha-c stays put.
        await backInService(host);
        const s = await sampler.stop();
        console.log(`(c) ${s.samples} samples; now on ${moved.node}`);
        assertEquals(s.doubles, [], "two QEMUs ran the guest at once");
        assertEquals((await qemusOf(vm.uuid)).map((c) => c.host), [moved.node]);
        const v = await show("ha-c");
        assertEquals([v.state, v.desired], ["running", "running"]);
      },
    );

    await step(
      t,
      "(e) a start that fails on a disk lock is retried elsewhere, with the reason",
      async () => {
        const host = await follower();
        const { vm } = await haVm("ha-e", host);
        await ok("vm", "stop", "ha-e", "--wait");
        // A stray QEMU holds the disk (a copy fencing missed): image locking stops the start.
        const { disks } = (await api<{ disks: { volume: string }[] }>(
          `${url()}/api/v1/vms/ha-e`,
          { token },
        )).body;
        const stray = new Deno.Command("qemu-system-x86_64", {
          args: [
            ...["-accel", "tcg", "-nodefaults", "-display", "none", "-S"],
            "-blockdev",
            JSON.stringify({
              "node-name": "root",
              driver: "qcow2",
              file: { driver: "file", filename: `${base}/shared/${disks[0].volume}.qcow2` },
            }),
            ...["-device", "virtio-blk-pci,drive=root"],
          ],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn();
        try {
          await ok("vm", "start", "ha-e");
          const seen = await eventually("the lock named as the reason", async () => {
            const v = await show("ha-e");
            return /locked by another QEMU/.test(v.reason ?? "") ? v : undefined;
          }, 30_000);
          console.log(`(e) seen: ${seen.state} on ${seen.node}: ${seen.reason}`);
          assertEquals(seen.desired, "running", "never failed with desired stopped");
          // While the lock still holds, the retry goes to another host (where it may fail
          // again on the same shared disk); once the stray is gone any host may win.
          const moved = await eventually(`ha-e re-placed away from ${host}`, async () => {
            const v = await show("ha-e");
            return v.node && v.node !== host ? v : undefined;
          }, 30_000);
          console.log(`(e) retried on ${moved.node}: ${moved.state} ${moved.reason ?? ""}`);
          assertEquals(moved.desired, "running");
        } finally {
          stray.kill("SIGKILL");
          await stray.status;
        }
        const v = await eventually("ha-e running after the retry", async () => {
          const v = await show("ha-e");
          return v.state === "running" ? v : undefined;
        }, 60_000);
        console.log(`(e) running on ${v.node}; reason: ${v.reason}`);
        assertEquals((await qemusOf(vm.uuid)).map((c) => c.host), [v.node]);
      },
    );

    await step(
      t,
      "(f) fencing broken too (watchdog frozen): the disk lock stops a second copy, named",
      async () => {
        const host = await follower();
        const { vm, pid } = await haVm("ha-f", host);
        const watchdog = await cluster.watchdogPid(host);
        assert(watchdog !== null, "the host runs a watchdog");
        Deno.kill(watchdog, "SIGSTOP");
        try {
          await cluster.kill(host, "SIGKILL");
          live.delete(host);
          const v = await eventually("the leader gave up within the HA policy", async () => {
            const v = await show("ha-f");
            return /HA restart limit reached/.test(v.reason ?? "") ? v : undefined;
          }, 90_000);
          console.log(`(f) ${v.state} on ${v.node}, desired ${v.desired}: ${v.reason}`);
          assertEquals([v.state, v.desired], ["failed", "running"]);
          assert(v.reason!.includes(`disk locked by another QEMU, probably on ${host}`), v.reason!);
          assertEquals((await qemusOf(vm.uuid)).map((c) => c.pid), [pid], "only the stale copy");
        } finally {
          Deno.kill(watchdog, "SIGCONT");
        }
        // Running again, the watchdog fences at once: the lease ran out long ago.
        await eventually("the stale copy fenced", () => Promise.resolve(!isAlive(pid)), 5_000);
        await cluster.restart(host);
        live.add(host);
        await backInService(host);
      },
    );

    await step(
      t,
      "(d) the node restarts inside its lease: its VMs keep running, re-adopted",
      async () => {
        await ok("config", "set", "ha.leaseMs", "15000");
        const host = await follower();
        const { vm, pid } = await haVm("ha-d", host);
        // Fed under the longer lease: more left than the short one could give.
        await eventually(`${host} fed under the 15 s lease`, async () => {
          return ((await fenceInMs(host)) ?? 0) > 4_000;
        }, 30_000);
        const fencedBefore = (await WatchdogClient.probe(cluster.node(host).dataDir))!.fenceAt;
        const watchdog = await cluster.watchdogPid(host);
        assert(watchdog !== null, "the host runs a watchdog");
        await cluster.kill(host, "SIGKILL");
        await cluster.restart(host);
        assertEquals(
          await cluster.watchdogPid(host),
          watchdog,
          "the restarted node re-attached to its watchdog",
        );
        // Past the end of the lease the watchdog had before the restart: it was fed again.
        await eventually("the watchdog fed past its old deadline", async () => {
          const hello = await WatchdogClient.probe(cluster.node(host).dataDir);
          return hello !== null && hello.fenceAt > fencedBefore;
        }, 30_000);
        await sleep(Math.max(0, fencedBefore - bootTimeMs()) + FENCE_MARGIN_MS);
        assert(isAlive(pid), "the same QEMU still runs");
        assertEquals((await qemusOf(vm.uuid)).map((c) => c.pid), [pid]);
        const v = await show("ha-d");
        assertEquals([v.node, v.state], [host, "running"]);
      },
    );

    await step(
      t,
      "(g) only the HA VM's QEMU dies: its node restarts it in place, never two copies",
      async () => {
        const host = await follower();
        await ok(
          "vm",
          "create",
          "ha-g",
          "--image",
          "guest",
          "--ha",
          "--restart-policy",
          "on-failure",
          "--node",
          host,
          "--wait",
        );
        const vm = await show("ha-g");
        const [first] = await qemusOf(vm.uuid);
        assertEquals(first.host, host);
        const sampler = sampleCopies(vm.uuid);
        Deno.kill(first.pid, "SIGKILL");
        const again = await eventually("ha-g running again in a new QEMU", async () => {
          const copies = await qemusOf(vm.uuid);
          const v = await show("ha-g");
          return v.state === "running" && copies.length === 1 && copies[0].pid !== first.pid
            ? { v, copies }
            : undefined;
        }, 60_000);
        const sampled = await sampler.stop();
        assertEquals(sampled.doubles, [], "never two QEMUs");
        assertEquals([again.v.node, again.copies[0].host], [host, host]);
      },
    );
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
    if (!keep) await Deno.remove(base, { recursive: true }).catch(() => {});
  }
});
