/**
 * Cluster disaster recovery on real node processes, SQLite files and TLS
 * (simulated hosts: the VMs are records that their hosts report converged):
 * - a 3-node cluster loses two nodes for good (SIGKILL, data dirs deleted);
 *   `cluster recover --force-new-cluster` on the third gives a working 1-node
 *   cluster with every VM record, which takes writes and a new member;
 * - `cluster backup`, then `node start --restore` on a fresh data dir, gives the
 *   same state through every listing of the API;
 * - bad input: truncated and corrupt backups, a data dir with cluster state,
 *   recover without its flag or on a running node are refused, and leave the
 *   data dir as it was;
 * - real QEMU: `--restore` on a host's old data dir (cluster state gone, `vms/`
 *   kept) re-adopts the VM still running there instead of starting it again.
 * Timings are printed, never asserted.
 */
import { join } from "node:path";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { ManagedProcess } from "../bench/lib/process.ts";
import { tailFile } from "../bench/lib/util.ts";
import { importTinyKernel, simulatedHostArgs } from "../bench/lib/simulated.ts";
import { bootIds, counters, fetchConsole, guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Vm {
  name: string;
  node: string;
  state: string;
}

interface Status {
  leader: string | null;
  members: { name: string; role: string; state: string }[];
}

const SIM = simulatedHostArgs(64, 262_144);
const VM_COUNT = 24;

/** Every state-holding listing of the API, as an admin sees it (GET path → body). */
const LISTINGS = [
  "/api/v1/vms?limit=1000",
  "/api/v1/images",
  "/api/v1/groups",
  "/api/v1/networks",
  "/api/v1/security-groups",
  "/api/v1/routers",
  "/api/v1/floating-ips",
  "/api/v1/tokens",
  "/api/v1/config",
  "/api/v1/config/history",
  "/api/v1/operations",
];

/** Admin calls against one node; anything but a 2xx fails the test. */
function caller(url: () => string | Promise<string>, token: () => string) {
  return async <T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<T> => {
    const r = await api<T>(`${await url()}${path}`, { method, token: token(), body });
    assert(
      r.status >= 200 && r.status < 300,
      `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`,
    );
    return r.body;
  };
}

/**
 * Creates state of every kind: an image, VMs on every host (half of those on `runningOn`
 * running, the rest stopped), a group, a network, a security group, a token, configuration.
 */
async function populate(cluster: NovactlCluster, runningOn: string[]): Promise<void> {
  const call = caller(() => cluster.leaderUrl(), () => cluster.adminToken);
  await importTinyKernel(cluster, "sim");
  await call("POST", "/api/v1/groups", { name: "web", policy: "anti-affinity" });
  await call("POST", "/api/v1/networks", { name: "blue", type: "overlay", subnet: "10.10.0.0/24" });
  await call("POST", "/api/v1/security-groups", { name: "ssh", description: "ssh in" });
  await call("POST", "/api/v1/tokens", { name: "ci", role: "viewer" });
  await call("PUT", "/api/v1/config/cluster.description", { value: "before the disaster" });
  const nodes = cluster.nodes.map((n) => n.name);
  for (let i = 0; i < VM_COUNT; i++) {
    await call("POST", "/api/v1/vms", {
      name: `vm${i}`,
      image: "sim",
      cpus: 1,
      memoryMiB: 128,
      node: nodes[i % nodes.length],
      start: i % 2 === 0 && runningOn.includes(nodes[i % nodes.length]),
      labels: { i: String(i) },
    });
  }
  await eventually("every VM converged", async () => {
    const { vms } = await call<{ vms: Vm[] }>("GET", "/api/v1/vms?limit=1000");
    return vms.length === VM_COUNT && vms.every((v) => v.state === expectedState(v, runningOn));
  }, 120_000);
}

/** What {@link populate} leaves a VM doing. */
function expectedState(vm: Vm, runningOn: string[]): string {
  return Number(vm.name.slice(2)) % 2 === 0 && runningOn.includes(vm.node) ? "running" : "stopped";
}

testWithTimeout({
  name:
    "quorum lost for good: force-new-cluster on the survivor keeps every VM, takes writes and a new member",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster({ extraNodeArgs: SIM });
  await cluster.start(3);
  const token = cluster.adminToken;
  try {
    await populate(cluster, ["n1", "n2", "n3"]);
    const survivor = cluster.node("n3");
    const leaderCall = caller(() => cluster.leaderUrl(), () => token);
    // An HA VM on a host about to be lost (simulated hosts write no disk: any path will do).
    await leaderCall("PUT", "/api/v1/config/storage.sharedDir", { value: "/srv/novactl-shared" });
    await leaderCall("POST", "/api/v1/vms", {
      name: "ha1",
      image: "sim",
      memoryMiB: 128,
      node: "n1",
      ha: true,
    });
    await eventually(
      "ha1 running on n1",
      async () => (await leaderCall<Vm>("GET", "/api/v1/vms/ha1")).state === "running",
    );
    const ca = { NOVACTL_CA: join(survivor.dataDir, "ca.crt") };
    const call = caller(() => survivor.url, () => token);
    // The survivor answers lists from its own replica (README, "reads"): take its view once it
    // has caught up with the leader's, or a record still on its way counts as lost.
    const shape = (vms: Vm[]) => JSON.stringify(vms.map((v) => [v.name, v.node, v.state]));
    const onLeader = (await leaderCall<{ vms: Vm[] }>("GET", "/api/v1/vms?limit=1000")).vms;
    let before: Vm[] = [];
    await eventually("the survivor's replica has every VM as the leader has it", async () => {
      before = (await call<{ vms: Vm[] }>("GET", "/api/v1/vms?limit=1000")).vms;
      return shape(before) === shape(onLeader);
    });

    // A copy of n2's data dir as the crash left it: a lost host that comes back later.
    const n2Copy = join(cluster.baseDir, "n2-as-it-died");
    await step(t, "n1 and n2 are lost for good: the survivor has no quorum", async () => {
      for (const n of ["n1", "n2"]) {
        await cluster.kill(n, "SIGKILL");
        if (n === "n2") {
          const cp = await new Deno.Command("cp", { args: ["-a", cluster.node(n).dataDir, n2Copy] })
            .output();
          assert(cp.success, "copied n2's data dir");
        }
        await Deno.remove(cluster.node(n).dataDir, { recursive: true });
      }
      const r = await api(`${survivor.url}/api/v1/config/cluster.description`, {
        method: "PUT",
        token,
        body: { value: "no quorum" },
      }).catch((err) => ({ status: 0, body: String(err) }));
      assert(r.status !== 200, `a write without quorum answered ${r.status}`);
    });

    await step(t, "recover is refused while the node runs, and without its flag", async () => {
      const running = await cli(
        ["cluster", "recover", "--force-new-cluster", "--data-dir", survivor.dataDir],
        ca,
      );
      assertEquals(running.code, 1, running.stderr);
      assert(/node process \d+ is running/.test(running.stderr), running.stderr);
      await cluster.stopNode("n3");
      const noFlag = await cli(["cluster", "recover", "--data-dir", survivor.dataDir], ca);
      assertEquals(noFlag.code, 2, noFlag.stderr);
      assert(noFlag.stderr.includes("--force-new-cluster"), noFlag.stderr);
    });

    await step(
      t,
      "force-new-cluster makes n3 the only voter; it starts with every VM",
      async () => {
        const t0 = performance.now();
        const r = await cli(
          [
            "cluster",
            "recover",
            "--force-new-cluster",
            "--data-dir",
            survivor.dataDir,
            "-o",
            "json",
          ],
          ca,
        );
        assertEquals(r.code, 0, r.stderr);
        const report = JSON.parse(r.stdout) as { removed: string[]; vms: number; ms: number };
        assertEquals(report.removed, ["n1", "n2"]);
        assertEquals(report.vms, before.length);
        const t1 = performance.now();
        await cluster.restart("n3");
        console.log(
          `force-new-cluster: rewrite ${report.ms} ms (CLI ${Math.round(t1 - t0)} ms), ` +
            `restart to /readyz ${Math.round(performance.now() - t1)} ms`,
        );
        const s = await call<Status>("GET", "/api/v1/cluster");
        assertEquals(s.leader, "n3");
        assertEquals(s.members.map((m) => [m.name, m.role]), [["n3", "voter"]]);
        // Every VM record is there, on its host.
        const after = (await call<{ vms: Vm[] }>("GET", "/api/v1/vms?limit=1000")).vms;
        assertEquals(after.map((v) => [v.name, v.node]), before.map((v) => [v.name, v.node]));
      },
    );

    await step(
      t,
      "the lost hosts' VMs: HA ones restart on n3, running ones are failed",
      async () => {
        // Once the lost hosts' leases have surely expired (ha.leaseMs after n3 took over).
        // What each VM should come to: the lost hosts' running VMs failed, the rest as before.
        const expected = (v: Vm) => v.node !== "n3" && v.state === "running" ? "failed" : v.state;
        const others = before.filter((v) => v.name !== "ha1");
        let vms: Vm[] = [];
        // HA acts on each VM in its own pass: ha1 may be back before the others are marked.
        await eventually("HA to act on the lost hosts' VMs", async () => {
          vms = (await call<{ vms: Vm[] }>("GET", "/api/v1/vms?limit=1000")).vms;
          const ha1 = vms.find((v) => v.name === "ha1")!;
          const settled = others.every((v) =>
            vms.find((x) => x.name === v.name)?.state === expected(v)
          );
          return ha1.node === "n3" && ha1.state === "running" && settled ? true : undefined;
        }, 60_000).catch(() => {}); // the loop below names what did not settle
        const ha1 = vms.find((v) => v.name === "ha1")!;
        assertEquals([ha1.node, ha1.state], ["n3", "running"], "ha1 restarted on the survivor");
        for (const v of others) {
          const now = vms.find((x) => x.name === v.name)!;
          assertEquals(now.state, expected(v), v.name);
        }
      },
    );

    await step(t, "new writes commit, and the recovery is in the audit log", async () => {
      await call("PUT", "/api/v1/config/cluster.description", { value: "after recovery" });
      const cfg = await call<{ config: Record<string, unknown> }>("GET", "/api/v1/config");
      assertEquals(cfg.config["cluster.description"], "after recovery");
      await call("POST", "/api/v1/vms", { name: "new1", image: "sim", memoryMiB: 128, node: "n3" });
      await eventually("new1 running on n3", async () => {
        const vm = await call<Vm>("GET", "/api/v1/vms/new1");
        return vm.state === "running";
      });
      const audit = await call<{ entries: { principal: string; route: string }[] }>(
        "GET",
        "/api/v1/audit?principal=system:recovery",
      );
      assertEquals(audit.entries.map((e) => e.route), ["cluster.forceNewCluster"]);
    });

    await step(t, "a new node joins the recovered cluster with a fresh join token", async () => {
      const t0 = performance.now();
      await cluster.addNode({ name: "n4" });
      console.log(`n4 joined the recovered cluster in ${Math.round(performance.now() - t0)} ms`);
      const s = await call<Status>("GET", "/api/v1/cluster");
      assertEquals(s.members.map((m) => m.name).sort(), ["n3", "n4"]);
      await call("POST", "/api/v1/vms", { name: "new2", image: "sim", memoryMiB: 128, node: "n4" });
      await eventually("new2 running on n4", async () => {
        const vm = await call<Vm>("GET", "/api/v1/vms/new2");
        return vm.state === "running";
      });
    });

    await step(t, "lost n2 coming back on its old data dir is refused and stops", async () => {
      const before = await call<Status & { term: number }>("GET", "/api/v1/cluster");
      const logPath = join(cluster.baseDir, "n2-returns.log");
      const n2 = await ManagedProcess.spawn({
        name: "n2-returns",
        command: Deno.execPath(),
        args: [
          ...["run", "-A", new URL("../main.ts", import.meta.url).pathname, "node", "start"],
          ...["--name", "n2", "--data-dir", n2Copy, "--listen", "127.0.0.1:0"],
          ...["--networking", "off", ...SIM],
        ],
        logPath,
      });
      try {
        await eventually("the returning n2 to stop", () => Promise.resolve(n2.exited), 60_000);
      } finally {
        await n2.stop(5_000);
      }
      const log = await Deno.readTextFile(logPath);
      assert(/removed/.test(log), "n2 logged that it was removed");
      const after = await call<Status & { term: number }>("GET", "/api/v1/cluster");
      assertEquals(after.leader, "n3");
      assertEquals(after.term, before.term, "its old term did not disturb the cluster");
      assertEquals(after.members.map((m) => m.name).sort(), ["n3", "n4"]);
    });

    await step(
      t,
      "n2 rejoins under its name with a join token: its VMs are its again",
      async () => {
        // The README's way back for a host: its cluster files go, its VMs' files stay.
        for (const f of Deno.readDirSync(n2Copy)) {
          if (!["vms", "pool", "blobs", "ovs", "listen.json"].includes(f.name)) {
            await Deno.remove(join(n2Copy, f.name), { recursive: true });
          }
        }
        const tokenFile = join(cluster.baseDir, "n2-rejoin.token");
        await Deno.writeTextFile(tokenFile, await cluster.createJoinToken() + "\n");
        const n2 = await ManagedProcess.spawn({
          name: "n2-rejoins",
          command: Deno.execPath(),
          args: [
            ...["run", "-A", new URL("../main.ts", import.meta.url).pathname, "node", "start"],
            ...["--name", "n2", "--data-dir", n2Copy, "--listen", "127.0.0.1:0"],
            ...["--join", survivor.url, "--token-file", tokenFile, "--networking", "off", ...SIM],
          ],
          logPath: join(cluster.baseDir, "n2-rejoins.log"),
        });
        try {
          await eventually("n2 a ready member again", async () => {
            const s = await call<Status>("GET", "/api/v1/cluster");
            return s.members.some((m) => m.name === "n2" && m.state === "ready");
          }, 60_000);
          // The VMs it ran (reported failed while it was gone) run on it again.
          const wanted = before.filter((v) => v.node === "n2" && v.state === "running");
          assert(wanted.length > 0, "n2 had running VMs");
          await eventually("n2's VMs running again", async () => {
            const { vms } = await call<{ vms: Vm[] }>("GET", "/api/v1/vms?node=n2&limit=1000");
            return wanted.every((w) => vms.some((v) => v.name === w.name && v.state === "running"));
          }, 60_000);
        } finally {
          await n2.stop(5_000);
        }
      },
    );
  } finally {
    await cluster.stop();
  }
});

testWithTimeout({
  name:
    "cluster backup, then node start --restore on a fresh data dir, gives an equal state; bad input is refused",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster({ extraNodeArgs: SIM });
  await cluster.start(3);
  const token = cluster.adminToken;
  const dir = await Deno.makeTempDir({ prefix: "novactl-backup-" });
  const file = join(dir, "cluster.backup");
  let restored: NovactlCluster | null = null;
  try {
    // Only n1's VMs run: the other hosts will be gone, and HA reports their running VMs
    // failed once their leases expire (the first test shows that); stopped ones stay so.
    await populate(cluster, ["n1"]);
    const listings = new Map<string, unknown>();

    await step(t, "cluster backup through a follower streams the leader's snapshot", async () => {
      const leader = await cluster.leaderName();
      const follower = cluster.nodes.find((n) => n.name !== leader)!;
      // The expected state from the leader: a follower's lists may lag a moment (README, "reads").
      const call = caller(() => cluster.leaderUrl(), () => token);
      for (const path of LISTINGS) listings.set(path, await call("GET", path));
      const t0 = performance.now();
      const r = await cli([
        ...["cluster", "backup", file, "--server", follower.url, "--token", token, "-o", "json"],
      ]);
      assertEquals(r.code, 0, r.stderr);
      const meta = JSON.parse(r.stdout) as {
        clusterId: string;
        index: number;
        members: { name: string }[];
        size: number;
        sha256: string;
      };
      console.log(
        `cluster backup of ${VM_COUNT} VMs: ${meta.size} bytes in ${
          Math.round(performance.now() - t0)
        } ms (CLI included), index ${meta.index}`,
      );
      assertEquals(meta.members.map((m) => m.name).sort(), ["n1", "n2", "n3"]);
      assertEquals((await Deno.stat(file)).mode! & 0o777, 0o600);
      // Listings were taken before: nothing changed meanwhile but the audit log.
      for (const path of LISTINGS) assertEquals(await call("GET", path), listings.get(path), path);
      // The leader answered, so it records the request (its audit batch commits just after).
      await eventually("the backup in the audit log", async () => {
        const audit = await call<{ entries: { route: string; code: number; principal: string }[] }>(
          "GET",
          "/api/v1/audit?resource=cluster",
        );
        return audit.entries.some((e) =>
          e.route === "/api/v1/cluster/backup" && e.code === 200 && e.principal === "admin"
        );
      });
    });

    await step(t, "a viewer token may not take a backup", async () => {
      const viewer = (await api<{ token: string }>(`${await cluster.leaderUrl()}/api/v1/tokens`, {
        method: "POST",
        token,
        body: { name: "looker", role: "viewer" },
      })).body.token;
      const r = await api(`${await cluster.leaderUrl()}/api/v1/cluster/backup`, {
        method: "POST",
        token: viewer,
      });
      assertEquals(r.status, 403);
      await api(`${await cluster.leaderUrl()}/api/v1/tokens/looker`, { method: "DELETE", token });
    });

    await step(
      t,
      "corrupt and truncated backups are refused, naming the file; nothing is made",
      async () => {
        const bytes = await Deno.readFile(file);
        const flipped = bytes.slice();
        flipped[Math.floor(bytes.length * 0.7)] ^= 0x20;
        const cases: [string, Uint8Array, RegExp][] = [
          ["bad1.backup", bytes.subarray(0, Math.floor(bytes.length / 2)), /is truncated/],
          ["bad2.backup", flipped, /is corrupt/],
        ];
        for (const [name, data, why] of cases) {
          const bad = join(dir, name);
          await Deno.writeFile(bad, data);
          const dataDir = join(dir, `${name}.dir`);
          const r = await cli([
            ...["node", "start", "--name", "n1", "--data-dir", dataDir],
            ...["--listen", "127.0.0.1:0", "--restore", bad, "--networking", "off", ...SIM],
          ]);
          assertEquals(r.code, 1, `${name}: ${r.stderr}`);
          const line = r.stderr.trim().split("\n").pop()!;
          assert(why.test(line) && line.includes(bad), `${name}: ${line}`);
          const made = await Deno.stat(dataDir).then(() => true, () => false);
          assert(!made, `${name}: the data dir ${dataDir} was not created`);
        }
      },
    );

    await step(
      t,
      "--restore onto a data dir holding cluster state is refused and leaves it",
      async () => {
        await cluster.stopNode("n2");
        const dataDir = cluster.node("n2").dataDir;
        const listing = () => [...Deno.readDirSync(dataDir)].map((e) => e.name).sort().join(",");
        const was = listing();
        const r = await cli([
          ...["node", "start", "--name", "n2", "--data-dir", dataDir, "--listen", "127.0.0.1:0"],
          ...["--restore", file, "--networking", "off", ...SIM],
        ]);
        assertEquals(r.code, 1, r.stderr);
        assert(/data-dir: .*without cluster state.*node\.json/.test(r.stderr), r.stderr);
        assertEquals(listing(), was);
      },
    );

    await step(
      t,
      "the old cluster is lost; --restore on a fresh dir gives the same state",
      async () => {
        await cluster.stop();
        const t0 = performance.now();
        restored = await new NovactlCluster({ extraNodeArgs: SIM }).restore(file, "n1");
        console.log(`restore to /readyz: ${Math.round(performance.now() - t0)} ms`);
        const r = restored;
        // Tokens carry over: the old admin token works, and so does the one the restore wrote.
        const call = caller(() => r.nodes[0].url, () => token);
        const fresh = caller(() => r.nodes[0].url, () => r.adminToken);
        const s = await fresh<Status>("GET", "/api/v1/cluster");
        assertEquals(s.members.map((m) => [m.name, m.role]), [["n1", "voter"]]);
        for (const path of LISTINGS) {
          let got = await call("GET", path) as Record<string, unknown>;
          let want = listings.get(path) as Record<string, unknown>;
          if (path === "/api/v1/tokens") {
            // The restore adds its own admin token (recovery-…), nothing else.
            const { tokens } = got as { tokens: { name: string }[] };
            assertEquals(tokens.filter((t) => t.name.startsWith("recovery-")).length, 1);
            got = { tokens: tokens.filter((t) => !t.name.startsWith("recovery-")) };
            want = { tokens: (want as { tokens: { name: string }[] }).tokens };
          }
          assertEquals(got, want, path);
        }
        // Hosts: only this one is a member; the others' VMs keep their records and host names.
        const { nodes } = await call<{ nodes: { name: string }[] }>("GET", "/api/v1/nodes");
        assertEquals(nodes.map((n) => n.name), ["n1"]);
        await call("PUT", "/api/v1/config/cluster.description", { value: "restored" });
      },
    );
  } finally {
    await cluster.stop();
    await (restored as NovactlCluster | null)?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** Pids of QEMUs whose command line names `dir`. */
async function qemusUnder(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (cmd.startsWith("qemu-system") && cmd.includes(dir)) pids.push(Number(e.name));
  }
  return pids;
}

testWithTimeout({
  name: "--restore on a host's old data dir re-adopts the QEMU still running there",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const cluster = new NovactlCluster({ env: { NOVACTL_ACCEL: "tcg" } });
  await cluster.start(1);
  const n1 = cluster.node("n1");
  const token = cluster.adminToken;
  const file = join(cluster.baseDir, "cluster.backup");
  const ok = async (...args: string[]) => {
    const r = await cli([...args, "--server", n1.url, "--token", token]);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  try {
    let pid = 0;
    await step(t, "a VM runs, and the cluster is backed up", async () => {
      await ok(...guestImportArgs(guest, "guest"));
      await ok("vm", "create", "g1", "--image", "guest", "--memory", "256M", "--wait");
      await eventually(
        "g1's guest booted",
        async () => bootIds(await fetchConsole(n1.url, token, "g1")).length === 1,
        60_000,
      );
      pid = (await cluster.qemuPids("n1")).get("g1")!;
      assert(pid > 0, "g1 has a QEMU");
      await ok("cluster", "backup", file);
    });

    await step(t, "the node's cluster state is lost; its VM goes on running", async () => {
      await cluster.stopNode("n1");
      const keep = new Set(["vms", "pool", "blobs", "ovs", "listen.json"]);
      for (const e of Deno.readDirSync(n1.dataDir)) {
        if (!keep.has(e.name) && !e.name.startsWith("watchdog.")) {
          await Deno.remove(join(n1.dataDir, e.name), { recursive: true });
        }
      }
      assertEquals((await cluster.qemuPids("n1")).get("g1"), pid);
    });

    await step(t, "--restore with the same name re-adopts g1: same QEMU, same boot", async () => {
      await cluster.restart("n1", ["--restore", file]);
      const vm = await eventually("g1 running after the restore", async () => {
        const r = await api<Vm>(`${n1.url}/api/v1/vms/g1`, { token });
        if (r.status === 200 && r.body.state === "running") return r.body;
        // What it was instead, for the timeout's message.
        throw new Error(`GET g1 → ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
      }, 60_000).catch(async (err) => {
        throw new Error(`${err.message}\n== n1 log\n${await tailFile(n1.logPath, 60)}`);
      });
      assertEquals(vm.node, "n1");
      assertEquals((await cluster.qemuPids("n1")).get("g1"), pid, "the same QEMU, not a new one");
      const log = await Deno.readTextFile(n1.logPath);
      assert(log.includes('"re-adopted running VM"'), "the node logged the re-adoption");
      await eventually("g1's guest keeps counting in the same boot", async () => {
        const text = await fetchConsole(n1.url, token, "g1");
        return bootIds(text).length === 1 && counters(text).length >= 3;
      }, 60_000);
    });
  } finally {
    const base = cluster.baseDir;
    await cluster.stop();
    // A QEMU whose pidfile went missing (a failing run) is found by its command line.
    for (const pid of await qemusUnder(base)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
});
