/**
 * Real VMs end to end on a 2-node loopback cluster (QEMU under TCG): the test
 * guest boots and prints its marker, the agent answers, memory snapshots roll
 * the guest's counter back, clones and templates, crashes, node restarts that
 * leave VMs running, deletion that leaves nothing behind, and bad input.
 * What the guest did is read from the guest itself (its console): its own
 * poweroff line on a graceful stop, the agent's fsfreeze hook around a disk
 * snapshot, the CPUs and memory it sees after a resize (also asked of QEMU over
 * QMP), and the cloud-init user, key and runcmd output it applied.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { bootIds, counters, fetchConsole, guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { MINUTE, readWithTimeout, testWithTimeout } from "./support/timeout.ts";
import { QmpClient } from "../host/kvm/qmp.ts";

/** `NOVACTL-GUEST-RESOURCES` lines: what the guest itself saw at each boot. */
function guestResources(consoleText: string): { cpus: number; memTotalKiB: number }[] {
  return [...consoleText.matchAll(/NOVACTL-GUEST-RESOURCES cpus=(\d+) mem_total_kib=(\d+)/g)]
    .map((m) => ({ cpus: Number(m[1]), memTotalKiB: Number(m[2]) }));
}

/** `NOVACTL-FSFREEZE freeze|thaw` lines the guest agent's fsfreeze hook printed, in order. */
function fsfreezePhases(consoleText: string): string[] {
  return [...consoleText.matchAll(/NOVACTL-FSFREEZE (\w+)/g)].map((m) => m[1]);
}

/** What QEMU itself runs a VM with, asked over its QMP socket. */
async function qmpResources(socket: string): Promise<{ cpus: number; memoryMiB: number }> {
  const qmp = await QmpClient.connect(socket, { timeoutMs: 10_000 });
  try {
    const cpus = await qmp.execute<unknown[]>("query-cpus-fast");
    const mem = await qmp.execute<{ "base-memory": number }>("query-memory-size-summary");
    return { cpus: cpus.length, memoryMiB: mem["base-memory"] / (1 << 20) };
  } finally {
    qmp.close();
  }
}

/** Memory g1 is resized to (from the default 256 MiB). */
const RESIZED_MIB = 384;

interface Vm {
  name: string;
  node: string;
  state: string;
  desired: string;
  reason: string | null;
  disks: { volume: string }[];
  guest: {
    agent: string;
    os?: { id?: string; prettyName?: string };
    interfaces?: { addresses: string[] }[];
  } | null;
  snapshots: { name: string }[];
}

testWithTimeout({
  name: "vms: lifecycle, console, agent, snapshots, clones, crashes and node restarts",
  timeoutMs: 25 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const cluster = new NovactlCluster({
    env: { NOVACTL_ACCEL: "tcg" },
    keepBaseDir: Deno.env.get("NOVACTL_KEEP_TEST_DIRS") === "1",
  });
  await cluster.start(2, { voters: 1 });
  const [n1] = cluster.nodes;
  const token = cluster.adminToken;
  const run = (...args: string[]) => cli([...args, "--server", n1.url, "--token", token]);
  const ok = async (...args: string[]) => {
    const r = await run(...args);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const show = async (name: string) =>
    (await api<Vm>(`${n1.url}/api/v1/vms/${name}`, { token })).body;
  const consoleOf = (name: string) => fetchConsole(n1.url, token, name);
  const untilConsole = (name: string, what: string, test: (text: string) => boolean) =>
    eventually(`${name}: ${what}`, async () => test(await consoleOf(name)), 60_000);
  const untilState = (name: string, state: string) =>
    eventually(`${name} ${state}`, async () => {
      const vm = await show(name);
      return vm.state === state ? vm : undefined;
    }, 60_000);

  try {
    await step(t, "the guest image is imported (kernel, initrd, cmdline)", async () => {
      // The next step is about fetching on demand: no background copies here.
      await ok("config", "set", "images.replicateToAllHosts", "false");
      await ok(...guestImportArgs(guest, "guest"));
    });

    await step(
      t,
      "create on the peer that lacks the image: fetched, booted, marker on the console",
      async () => {
        const out = JSON.parse(
          await ok(
            "vm",
            "create",
            "g1",
            "--image",
            "guest",
            "--node",
            "n2",
            "--wait",
            "-o",
            "json",
          ),
        );
        assertEquals(out.state, "running");
        assertEquals(out.node, "n2");
        await untilConsole("g1", "ready marker", (c) => bootIds(c).length === 1);
        await untilConsole("g1", "counter", (c) => counters(c).length >= 2);
      },
    );

    await step(t, "vm console --follow streams new console lines as the guest writes", async () => {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../main.ts", import.meta.url).pathname,
          "vm",
          "console",
          "g1",
          "--follow",
          "--bytes",
          "1",
          "--server",
          n1.url,
          "--token",
          token,
          "--ca",
          cluster.caFile,
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const start = Math.max(...counters(await consoleOf("g1")));
      let seen = "";
      const reader = child.stdout.getReader();
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && counters(seen).filter((n) => n > start).length < 2) {
        const left = Math.max(1, deadline - Date.now());
        // Out of time with nothing read: stop reading; the assertion below says what was seen.
        const { value, done } = await readWithTimeout(reader, left, "vm console --follow")
          .catch(() => ({ value: undefined, done: true as const }));
        if (done) break;
        seen += new TextDecoder().decode(value);
      }
      child.kill("SIGTERM");
      await reader.cancel().catch(() => {});
      await child.status;
      assert(counters(seen).filter((n) => n > start).length >= 2, `followed: ${seen.slice(-200)}`);
    });

    await step(t, "the guest agent reports the guest OS and its IP address", async () => {
      const vm = await eventually("agent info", async () => {
        const v = await show("g1");
        return v.guest?.agent === "ok" && v.guest.interfaces?.some((i) => i.addresses.length)
          ? v
          : undefined;
      }, 60_000);
      assertEquals(vm.guest!.os!.id, "novactl-guest");
      const addrs = vm.guest!.interfaces!.flatMap((i) => i.addresses);
      assert(addrs.some((a) => a.startsWith("10.0.2.15/")), `addresses: ${addrs}`);
    });

    await step(
      t,
      "a snapshot with memory restores the guest's counter to the snapshot point",
      async () => {
        await ok("vm", "snapshot", "create", "g1", "s1", "--memory");
        const atSnapshot = Math.max(...counters(await consoleOf("g1")));
        await untilConsole(
          "g1",
          "counter moves on",
          (c) => Math.max(...counters(c)) >= atSnapshot + 4,
        );
        await ok("vm", "snapshot", "restore", "g1", "s1");
        // The guest runs until the restore, so the console may end with lines printed after
        // the snapshot; the rollback is where the counter drops, wherever that lands.
        const resumedAt = await eventually("counter rolled back", async () => {
          const all = counters(await consoleOf("g1"));
          const drop = all.findLastIndex((n, i) => i > 0 && n < all[i - 1]);
          return drop > 0 && all.length - drop >= 2 ? all[drop] : undefined;
        }, 60_000);
        assert(
          resumedAt <= atSnapshot + 1,
          `counter resumed at ${resumedAt}, snapshot at ${atSnapshot}`,
        );
        assertEquals(bootIds(await consoleOf("g1")).length, 1, "restore is not a reboot");
        assertEquals((await show("g1")).state, "running");
        const list = JSON.parse(await ok("vm", "snapshot", "list", "g1", "-o", "json"));
        assertEquals(
          list.snapshots.map((s: { name: string }) => s.name),
          ["s1"],
        );
      },
    );

    await step(
      t,
      "a disk-only snapshot of the running VM is taken between fs-freeze and thaw",
      async () => {
        const before = (await consoleOf("g1")).length;
        await ok("vm", "snapshot", "create", "g1", "disk1");
        // The agent's fsfreeze hook prints each phase; the thaw line comes only after the
        // snapshot transaction (the host thaws once QEMU has answered).
        const phases = await eventually("freeze and thaw markers", async () => {
          const p = fsfreezePhases((await consoleOf("g1")).slice(before));
          return p.includes("thaw") ? p : undefined;
        }, 30_000).catch(async (err) => {
          throw new Error(`${err.message}; console: ${(await consoleOf("g1")).slice(before)}`);
        });
        assertEquals(phases, ["freeze", "thaw"], "the guest was frozen once, then thawed");
        const list = JSON.parse(await ok("vm", "snapshot", "list", "g1", "-o", "json"));
        const snap = list.snapshots.find((s: { name: string }) => s.name === "disk1");
        assertEquals([snap.memory, snap.vmState], [false, "running"]);
        assertEquals((await show("g1")).state, "running");
        const r = await run("vm", "snapshot", "restore", "g1", "disk1");
        assertEquals(r.code, 1, "a disk-only snapshot is restored with the VM stopped");
        assert(/stop g1/.test(r.stderr), r.stderr);
        // Snapshots are operations: the command waited for this one (-o json: the record).
        const del = JSON.parse(await ok("vm", "snapshot", "delete", "g1", "disk1", "-o", "json"));
        assertEquals([del.kind, del.state, del.result.snapshot], [
          "snapshot-delete",
          "succeeded",
          "disk1",
        ]);
        const started = (await ok("vm", "snapshot", "create", "g1", "disk2", "--no-wait")).trim();
        const id = /^snapshot-create (\S+) started$/.exec(started)?.[1];
        assert(id, `--no-wait names the operation: ${started}`);
        const op = JSON.parse(await ok("operation", "wait", id, "-o", "json"));
        assertEquals([op.state, op.result.snapshot, op.result.memory], [
          "succeeded",
          "disk2",
          false,
        ]);
        await ok("vm", "snapshot", "delete", "g1", "disk2");
      },
    );

    await step(
      t,
      "stop is graceful (the guest powers itself off), resize while stopped, start boots again",
      async () => {
        const before = (await consoleOf("g1")).length;
        const firstBoot = guestResources(await consoleOf("g1"));
        assertEquals(firstBoot.length, 1, "one boot so far");
        await ok("vm", "stop", "g1", "--wait");
        assertEquals((await cluster.qemuPids("n2")).has("g1"), false);
        // The guest's own shutdown path (agent guest-shutdown or ACPI -> /sbin/poweroff)
        // prints its line, then the kernel's; a QEMU quit or kill prints neither.
        const shutdown = (await consoleOf("g1")).slice(before);
        const ours = shutdown.indexOf("novactl-guest: poweroff");
        assert(ours >= 0, `the guest's poweroff line: ${shutdown.slice(-400)}`);
        assert(
          shutdown.indexOf("reboot: Power down", ours) > ours,
          `the kernel's power-down line after it: ${shutdown.slice(-400)}`,
        );

        await ok("vm", "resize", "g1", "--cpus", "2", "--memory", `${RESIZED_MIB}M`);
        await ok("vm", "start", "g1", "--wait");
        await untilConsole("g1", "second boot", (c) => bootIds(c).length === 2);
        const [first, second] = guestResources(await consoleOf("g1"));
        assertEquals([first.cpus, second.cpus], [1, 2], "CPUs the guest sees");
        // MemTotal is RAM minus what the kernel reserves; the reserve barely changes, so
        // the guest sees (nearly) all of the added memory.
        const addedKiB = (RESIZED_MIB - 256) * 1024;
        const grewKiB = second.memTotalKiB - first.memTotalKiB;
        assert(
          grewKiB > addedKiB * 0.9 && grewKiB <= addedKiB,
          `guest MemTotal grew by ${grewKiB} KiB for ${addedKiB} KiB added`,
        );
      },
    );

    await step(
      t,
      "restarting the node process leaves the VM running and re-adopted; QMP confirms the resize",
      async () => {
        const before = await cluster.qemuPids("n2");
        assert(before.has("g1"));
        const boots = bootIds(await consoleOf("g1")).length;
        await cluster.kill("n2");
        assert((await cluster.qemuPids("n2")).get("g1") === before.get("g1"), "QEMU outlived node");
        // QMP takes one client at a time; with the node down, the test can ask QEMU itself.
        const qmp = await qmpResources(`${cluster.node("n2").dataDir}/vms/g1/qmp.sock`);
        assertEquals(qmp, { cpus: 2, memoryMiB: RESIZED_MIB });
        await cluster.restart("n2");
        await eventually("n2 back", async () => {
          const r = await api(`${cluster.node("n2").url}/readyz`);
          return r.status === 200;
        }, 60_000);
        const c0 = Math.max(...counters(await consoleOf("g1")));
        await untilConsole("g1", "counter continues", (c) => Math.max(...counters(c)) > c0 + 1);
        assertEquals((await cluster.qemuPids("n2")).get("g1"), before.get("g1"));
        assertEquals(bootIds(await consoleOf("g1")).length, boots, "not rebooted");
        assertEquals((await show("g1")).state, "running");
      },
    );

    await step(t, "a killed QEMU is reported failed; with on-failure it is restarted", async () => {
      const pid = (await cluster.qemuPids("n2")).get("g1")!;
      Deno.kill(pid, "SIGKILL");
      // The host records "failed" and then, in a second write, desired "stopped": wait for both.
      const failed = await eventually("g1 failed and left stopped", async () => {
        const vm = await show("g1");
        return vm.state === "failed" && vm.desired === "stopped" ? vm : undefined;
      }, 60_000).catch(async (err) => {
        throw new Error(`${err.message}; g1 is ${JSON.stringify(await show("g1"))}`);
      });
      assert(/exited unexpectedly/.test(failed.reason ?? ""), `reason: ${failed.reason}`);

      await ok(
        "vm",
        "create",
        "g2",
        "--image",
        "guest",
        "--node",
        "n1",
        "--restart-policy",
        "on-failure",
        "--wait",
      );
      const pid2 = (await cluster.qemuPids("n1")).get("g2")!;
      Deno.kill(pid2, "SIGKILL");
      await eventually("g2 restarted", async () => {
        const now = (await cluster.qemuPids("n1")).get("g2");
        return now && now !== pid2 && (await show("g2")).state === "running";
      }, 60_000);
    });

    await step(
      t,
      "templates and linked clones: the clone boots, deleting it leaves the source intact",
      async () => {
        await ok("vm", "snapshot", "delete", "g1", "s1");
        await ok("vm", "template", "g1");
        const r = await run("vm", "start", "g1");
        assertEquals(r.code, 1, "a template never runs");
        await ok("vm", "clone", "g1", "c1", "--linked", "--start");
        await untilState("c1", "running");
        await untilConsole("c1", "clone boots", (c) => bootIds(c).length === 1);
        await ok("vm", "create", "c2", "--from-template", "g1", "--wait");
        const del = await run("vm", "delete", "g1");
        assertEquals(del.code, 1, "a template with linked clones cannot be deleted");
        assert(/linked clones/.test(del.stderr), del.stderr);
        await ok("vm", "delete", "c1", "--force", "--wait");
        const tpl = await show("g1");
        const volumes = `${cluster.node("n2").dataDir}/pool/${tpl.disks[0].volume}.qcow2`;
        await Deno.stat(volumes); // the template's disk is still there
        await ok("vm", "clone", "g1", "c3", "--start");
        await untilConsole("c3", "another clone boots", (c) => bootIds(c).length === 1);
      },
    );

    await step(t, "cloud-init seed reaches the guest", async () => {
      const dir = await Deno.makeTempDir();
      await Deno.writeTextFile(
        `${dir}/key.pub`,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbT0m ops@x\n",
      );
      await Deno.writeTextFile(
        `${dir}/ud.yaml`,
        "#cloud-config\nruncmd:\n  - echo NOVACTL-RUNCMD host=$(hostname) uid=$(id -u)\n",
      );
      await ok(
        "vm",
        "create",
        "ci1",
        "--image",
        "guest",
        "--user",
        "ops",
        "--ssh-key",
        `${dir}/key.pub`,
        "--user-data",
        `${dir}/ud.yaml`,
        "--wait",
      );
      await untilConsole("ci1", "cidata", (c) => /NOVACTL-CIDATA .*local-hostname=ci1/.test(c));
      // Read back in the guest after it applied the seed: its passwd entry, its
      // authorized_keys, and the output of the user-data's runcmd run by the guest's shell.
      const c = await untilConsole("ci1", "user-data applied", (c) => /NOVACTL-RUNCMD/.test(c))
        .then(() => consoleOf("ci1"));
      assert(/^NOVACTL-USER ops:x:\d+:\d+::\/home\/ops:/m.test(c), `user ops: ${c.slice(0, 2000)}`);
      assert(
        c.includes("NOVACTL-SSH-KEY ops ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbT0m ops@x"),
        `ops's authorized key: ${c.slice(0, 2000)}`,
      );
      assert(
        /^NOVACTL-RUNCMD host=ci1 uid=0\s*$/m.test(c),
        `runcmd ran in the guest: ${c.slice(0, 2000)}`,
      );
    });

    await step(
      t,
      "bad input is refused with the documented error and nothing changes",
      async () => {
        const count = async () =>
          (await api<{ vms: unknown[] }>(`${n1.url}/api/v1/vms`, { token })).body.vms.length;
        const n = await count();
        const post = (body: unknown) =>
          api<{ error: { code: string; details?: { fields: { field: string }[] } } }>(
            `${n1.url}/api/v1/vms`,
            { method: "POST", token, body },
          );
        const field = (r: { body: { error: { details?: { fields: { field: string }[] } } } }) =>
          r.body.error.details?.fields[0]?.field;

        let r = await post({ name: "b1", image: "nope" });
        assertEquals([r.status, field(r)], [400, "image"]);
        r = await post({ name: "b1", image: "guest", cpus: 0 });
        assertEquals([r.status, field(r)], [400, "cpus"]);
        r = await post({ name: "b1", image: "guest", memoryMiB: 0 });
        assertEquals([r.status, field(r)], [400, "memoryMiB"]);
        r = await post({ name: "b1", image: "guest", diskGiB: 10_000_000 });
        assertEquals([r.status, field(r)], [400, "diskGiB"]);
        r = await post({ name: "b1", image: "guest", memoryMiB: 4 * 1024 * 1024 });
        assertEquals(r.status, 409, "no host has 4 TiB: placement explains per node");
        r = await post({ name: "g2", image: "guest" });
        assertEquals([r.status, r.body.error.code], [409, "conflict"]);
        r = await post({
          name: "b1",
          image: "guest",
          cloudInit: { userData: "#cloud-config\nusers: [a\n" },
        });
        assertEquals([r.status, field(r)], [400, "userData"]);
        const del = await run("vm", "delete", "g2");
        assertEquals(del.code, 1);
        assert(/running/.test(del.stderr), del.stderr);
        const resize = await run("vm", "resize", "g2", "--cpus", "2");
        assertEquals(resize.code, 1);
        assertEquals(await count(), n);
        assertEquals((await show("g2")).state, "running");
      },
    );

    await step(t, "restart runs a new QEMU, and delete removes disks and QEMU", async () => {
      const pid = (await cluster.qemuPids("n1")).get("g2");
      await ok("vm", "restart", "g2", "--wait");
      await eventually("new QEMU after restart", async () => {
        const now = (await cluster.qemuPids("n1")).get("g2");
        return now !== undefined && now !== pid;
      }, 60_000);
      const vm = await show("g2");
      await ok("vm", "delete", "g2", "--force", "--wait");
      assertEquals((await cluster.qemuPids("n1")).has("g2"), false);
      for (const d of vm.disks) {
        const gone = await Deno.stat(`${cluster.node("n1").dataDir}/pool/${d.volume}.qcow2`).then(
          () => false,
          () => true,
        );
        assert(gone, `volume ${d.volume} removed`);
      }
      const r = await api(`${n1.url}/api/v1/vms/g2`, { token });
      assertEquals(r.status, 404);
    });
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
  }
});
