/**
 * Storage end to end on real guests (QEMU under TCG) and real btrfs on a loop device, on a
 * 2-node loopback cluster whose data dirs live on tmpfs (live migration needs it here):
 *
 * - pools: a btrfs pool on a path that is not btrfs is refused; a loop-backed btrfs pool made
 *   by its host and a shared-dir pool are listed with each host's capacity;
 * - the scheduler: a VM on the btrfs pool lands on the pool's host, and one that does not fit
 *   in it is refused with the pool's free space named;
 * - btrfs VM lifecycle: boot, a disk snapshot (a read-only subvolume), a linked clone (a
 *   subvolume snapshot, no backing file);
 * - cold migration of a VM whose disk is on a btrfs pool on every host: `btrfs send` out, and
 *   back incrementally against the snapshot both hosts kept;
 * - volumes: refused beyond the pool's free space unless `storage.overcommit` allows it;
 * - hot-plug: once `vm disk attach --wait` returns, the running guest's `/sys/block` has the
 *   disk (its next look, no waiting for it), `volume resize` grows it there (QMP block_resize),
 *   detaching the root disk is refused, and once `vm disk detach --wait` returns it is gone;
 * - a shared-dir volume attached to a VM moves with it in a live migration.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { fetchConsole, guestImportArgs, scriptUserData, testGuest } from "../bench/lib/guest.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** The guest's side: once a second, `NV-DISKS vda:SECTORS vdb:SECTORS ...`. */
const WATCHER = `while :; do
  l=
  for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    l="$l \${b##*/}:$(cat $b/size)"
  done
  echo "NV-DISKS$l"
  sleep 1
done
`;

/** The guest's disks as its last NV-DISKS line lists them: name → 512-byte sectors. */
function guestDisks(consoleText: string): Map<string, number> {
  const last = [...consoleText.matchAll(/NV-DISKS((?: \S+)*)\s*$/gm)].at(-1)?.[1] ?? "";
  return new Map(
    last.trim().split(/\s+/).filter(Boolean).map((e) => {
      const [name, size] = e.split(":");
      return [name, Number(size)];
    }),
  );
}

interface Vm {
  name: string;
  node: string;
  state: string;
  disks: { id: string; pool?: string; volume: string; sizeBytes: number }[];
}

interface PoolView {
  name: string;
  driver: string;
  node: string | null;
  hosts: Record<string, { totalBytes: number; freeBytes: number; error?: string }>;
}

const MiB = 2 ** 20;
const LOOP_SCRIPT = new URL("../scripts/btrfs_loop.sh", import.meta.url).pathname;
const GiB = 2 ** 30;

async function sh(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

testWithTimeout({
  name: "storage: pools, btrfs VMs, volumes hot-plugged into a guest and moved by migration",
  timeoutMs: 20 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const base = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-storage-" });
  const cluster = new NovactlCluster({ baseDir: base, env: { NOVACTL_ACCEL: "tcg" } });
  const run = (...args: string[]) =>
    cli([...args, "--server", cluster.nodes[0].url, "--token", cluster.adminToken]);
  const ok = async (...args: string[]) => {
    const r = await run(...args);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const refused = async (pattern: RegExp, ...args: string[]) => {
    const r = await run(...args);
    assertEquals(r.code, 1, `${args.join(" ")} should fail: ${r.stdout}`);
    assert(pattern.test(r.stderr), `${args.join(" ")}: ${r.stderr}`);
    return r.stderr;
  };
  const json = async <T>(...args: string[]) => JSON.parse(await ok(...args, "-o", "json")) as T;
  const show = (name: string) => json<Vm>("vm", "show", name);
  const pool = (name: string) => json<PoolView>("pool", "show", name);
  let added = "";
  let attached = new Map<string, number>();
  const disks = async (vm: string) =>
    guestDisks(await fetchConsole(cluster.nodes[0].url, cluster.adminToken, vm));
  /**
   * The guest's disks as it lists them in the first NV-DISKS line it began after this call
   * (the second one printed after it: the first may have been read before): what the guest
   * saw then, not an eventual state.
   */
  const nextLook = async (vm: string) => {
    const seen = (await fetchConsole(cluster.nodes[0].url, cluster.adminToken, vm)).length;
    const text = await eventually("the guest's next two looks", async () => {
      const t = await fetchConsole(cluster.nodes[0].url, cluster.adminToken, vm);
      return t.slice(seen).split("NV-DISKS").length > 3 ? t : undefined;
    }, 30_000);
    const fresh = text.slice(seen).split("NV-DISKS");
    return guestDisks("NV-DISKS" + fresh[2]);
  };

  try {
    await step(
      t,
      "pools: non-btrfs refused; loop-backed btrfs and shared-dir reported",
      async () => {
        await cluster.start(2, { voters: 1 });
        await ok("config", "set", "nodes.inventoryRefreshMs", "1000");
        await ok(...guestImportArgs(guest, "guest"));
        const plain = `${base}/plain`;
        await Deno.mkdir(plain);
        const err = await refused(
          /source: .*plain is on a tmpfs filesystem, not btrfs/,
          ...["pool", "create", "bad", "--driver", "btrfs", "--source", plain, "--node", "n1"],
        );
        assert(!err.includes("\n") || err.trim().split("\n").length === 1, err);
        assertEquals((await json<{ pools: PoolView[] }>("pool", "list")).pools.map((p) => p.name), [
          "dir",
        ], "nothing half-written");
        await ok(
          ...["pool", "create", "fast", "--driver", "btrfs", "--node", "n1"],
          ...["--source", `${base}/fast.img`, "--size", "2G"],
        );
        assertEquals((await sh("stat", "-f", "-c", "%T", `${base}/fast.img.mnt`)).trim(), "btrfs");
        await Deno.mkdir(`${base}/shared`);
        await ok("pool", "create", "shr", "--driver", "shared-dir", "--source", `${base}/shared`);
        const fast = await eventually("n1 reports the btrfs pool", async () => {
          const p = await pool("fast");
          return p.hosts.n1?.totalBytes > 0 ? p : undefined;
        }, 30_000);
        assertEquals(
          Object.keys(fast.hosts),
          ["n1"],
          "a pool with one host is measured there only",
        );
        assert(Math.abs(fast.hosts.n1.totalBytes - 2 * GiB) < 0.1 * GiB, JSON.stringify(fast));
        const shr = await eventually("both hosts report the shared pool", async () => {
          const p = await pool("shr");
          return p.hosts.n1 && p.hosts.n2 ? p : undefined;
        }, 30_000);
        assert(!shr.hosts.n1.error && !shr.hosts.n2.error, JSON.stringify(shr));
        const inv = (await api<{ inventory: { pools: Record<string, unknown> } }>(
          `${cluster.nodes[0].url}/api/v1/nodes/n1`,
          { token: cluster.adminToken },
        )).body.inventory;
        assertEquals(Object.keys(inv.pools).sort(), ["dir", "fast", "shr"], "node inventory");
        console.log(`pool fast on n1: ${JSON.stringify(fast.hosts.n1)}`);
      },
    );

    await step(
      t,
      "btrfs VM: placed on the pool's host; snapshot and linked clone are subvolumes",
      async () => {
        await ok(
          "vm",
          "create",
          "b1",
          "--image",
          "guest",
          "--memory",
          "128M",
          "--pool",
          "fast",
          "--wait",
        );
        const b1 = await show("b1");
        assertEquals([b1.node, b1.state, b1.disks[0].pool], ["n1", "running", "fast"]);
        const tooBig = await refused(
          /pool "fast" has \d+\.\d GiB free < 64\.0 GiB requested/,
          ...["vm", "create", "b9", "--image", "guest", "--pool", "fast", "--disk-size", "64G"],
        );
        assert(/n2: pool "fast" is on n1/.test(tooBig), tooBig);
        await ok("vm", "stop", "b1", "--wait");
        await ok("vm", "snapshot", "create", "b1", "s1");
        const root = b1.disks[0].volume;
        const subvols = await sh("btrfs", "subvolume", "list", `${base}/fast.img.mnt`);
        assert(subvols.includes(`.snapshots/${root}@s1`), subvols);
        await ok("vm", "snapshot", "restore", "b1", "s1");
        await ok("vm", "snapshot", "delete", "b1", "s1");
        const left = await sh("btrfs", "subvolume", "list", `${base}/fast.img.mnt`);
        assert(!left.includes("@s1"), left);
        await ok("vm", "template", "b1");
        await ok("vm", "clone", "b1", "b2", "--linked");
        await ok("vm", "start", "b2", "--wait"); // its disk is made on its first start
        const b2 = await show("b2");
        assertEquals(b2.node, "n1");
        const info = JSON.parse(
          await sh(
            "qemu-img",
            "info",
            "-U",
            "--output=json",
            `${base}/fast.img.mnt/${b2.disks[0].volume}/disk.qcow2`,
          ),
        );
        assertEquals(info["backing-filename"], undefined, "a linked clone without a backing chain");
        await ok("vm", "delete", "b2", "--force");
        await ok("vm", "create", "b3", "--from-template", "b1", "--wait");
        await ok("vm", "delete", "b3", "--force");
      },
    );

    await step(
      t,
      "cold migration of a btrfs volume: btrfs send, then incremental back",
      async () => {
        // A btrfs pool on every host: each its own loop device, named by `{node}` in the source.
        for (const n of ["n1", "n2"]) {
          await sh("bash", LOOP_SCRIPT, "up", `${base}/bt-${n}`, "2G");
        }
        await ok(
          "pool",
          "create",
          "cold",
          "--driver",
          "btrfs",
          "--source",
          `${base}/bt-{node}/mnt`,
        );
        await ok("vm", "create", "c1", "--image", "guest", "--memory", "128M", "--pool", "cold");
        const c1 = await eventually("c1 runs", async () => {
          const vm = await show("c1");
          return vm.state === "running" ? vm : undefined;
        }, 120_000);
        const vol = c1.disks[0].volume;
        const there = c1.node;
        const other = there === "n1" ? "n2" : "n1";
        await ok("vm", "stop", "c1", "--wait");
        const snaps = async (n: string) =>
          (await sh("btrfs", "subvolume", "list", `${base}/bt-${n}/mnt`)).split("\n")
            .filter((l) => l.includes(`.snapshots/${vol}@mig-`)).length;
        const hasVolume = async (n: string) =>
          (await sh("btrfs", "subvolume", "list", `${base}/bt-${n}/mnt`)).includes(
            ` path ${vol}\n`,
          );
        for (const [to, from, snapshotsThere] of [[other, there, 1], [there, other, 2]] as const) {
          await ok("vm", "migrate", "c1", "--to", to);
          await eventually(`c1 is on ${to}`, async () => {
            const vm = await show("c1");
            return vm.node === to && vm.state === "stopped" || undefined;
          }, 120_000);
          assert(await hasVolume(to), `the volume arrived on ${to}`);
          await eventually(
            `the volume left ${from}`,
            async () => !(await hasVolume(from)) || undefined,
          );
          assertEquals(
            await snaps(from),
            1,
            `${from} keeps its last sent snapshot as the next base`,
          );
          // Back on the first host it arrived on top of that base: an incremental receive.
          assertEquals(await snaps(to), snapshotsThere);
        }
        // What the receivers logged: the first stream was full, the one back incremental.
        const received = (await Promise.all(cluster.logPaths.map((p) => Deno.readTextFile(p))))
          .flatMap((text) => text.split("\n"))
          .filter((l) => l.includes("received volume with btrfs receive") && l.includes(vol))
          .map((l) => JSON.parse(l) as { tag: string; parent: string | null; ts: string })
          .sort((a, b) => a.ts.localeCompare(b.ts));
        assertEquals(received.map((r) => r.parent), [null, received[0]?.tag]);
        console.log(`btrfs receive: ${JSON.stringify(received)}`);
        await ok("vm", "start", "c1", "--wait");
        await ok("vm", "delete", "c1", "--force");
        await eventually(
          "c1 is gone",
          async () => (await run("vm", "show", "c1")).code === 1 || undefined,
          60_000,
        );
        await ok("pool", "delete", "cold");
      },
    );

    await step(t, "volumes: refused beyond free space unless overcommit allows", async () => {
      await refused(
        /size: 100\.00 GiB requested, pool "fast" has \d+\.\d\d GiB free on n1/,
        ...["volume", "create", "huge", "--pool", "fast", "--size", "100G"],
      );
      assertEquals((await json<{ volumes: unknown[] }>("volume", "list")).volumes, []);
      await ok("config", "set", "storage.overcommit", "64");
      await ok("volume", "create", "huge", "--pool", "fast", "--size", "100G");
      await ok("volume", "delete", "huge");
      await ok("config", "set", "storage.overcommit", "1");
      await ok("volume", "create", "d1", "--pool", "shr", "--size", "64M");
    });

    await step(t, "hot-plug: the guest sees the disk appear, grow and disappear", async () => {
      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${dir}/g1.yaml`, scriptUserData(WATCHER));
        await ok(
          ...["vm", "create", "g1", "--image", "guest", "--memory", "128M", "--node", "n1"],
          ...["--user-data", `${dir}/g1.yaml`, "--wait"],
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      const before = await eventually("the guest lists its disks", async () => {
        const d = await disks("g1");
        return d.size ? d : undefined;
      }, 120_000);
      const t0 = performance.now();
      // --wait returns once the guest's driver set the disk up (host/plugged_devices.ts): the
      // guest's first look after that already lists it.
      const shown = JSON.parse(
        await ok("vm", "disk", "attach", "g1", "d1", "--wait", "--timeout", "2m", "-o", "json"),
      );
      assertEquals(shown.plugged, true, JSON.stringify(shown));
      console.log(`attach --wait → plugged: ${Math.round(performance.now() - t0)} ms`);
      const after = await nextLook("g1");
      assertEquals(after.size, before.size + 1, "the guest has the disk when --wait returns");
      added = [...after.keys()].find((k) => !before.has(k))!;
      attached = after;
      assertEquals(after.get(added), 64 * MiB / 512, "the guest sees the volume's size");

      await ok("volume", "resize", "d1", "--size", "128M");
      await eventually(
        "the guest sees it grown (block_resize)",
        async () => (await disks("g1")).get(added) === 128 * MiB / 512 || undefined,
        60_000,
      );
      assertEquals(
        (await json<{ sizeBytes: number }>("volume", "show", "d1")).sizeBytes,
        128 * MiB,
      );

      await refused(/root disk of running VM "g1"/, "vm", "disk", "detach", "g1", "root");
      await refused(/attached to VM "g1"/, "volume", "delete", "d1");
    });

    await step(t, "a shared-dir volume moves with a live migration", async () => {
      await ok("vm", "migrate", "g1", "--to", "n2");
      await eventually("g1 runs on n2", async () => {
        const vm = await show("g1");
        return vm.node === "n2" && vm.state === "running" || undefined;
      }, 180_000);
      const moved = await eventually("the guest still has the volume", async () => {
        const d = await disks("g1");
        return d.get(added) === 128 * MiB / 512 ? d : undefined;
      }, 60_000);
      assertEquals(moved.size, attached.size);
    });

    await step(t, "detach: the disk disappears from the guest", async () => {
      const t1 = performance.now();
      const r = JSON.parse(
        await ok("vm", "disk", "detach", "g1", "d1", "--wait", "--timeout", "2m", "-o", "json"),
      );
      assertEquals(r.plugged, false, JSON.stringify(r));
      console.log(`detach --wait → unplugged: ${Math.round(performance.now() - t1)} ms`);
      assertEquals((await nextLook("g1")).has(added), false, "gone from the guest by then");
      assertEquals(
        (await json<{ attachedTo: string | null }>("volume", "show", "d1")).attachedTo,
        null,
      );
    });

    await step(
      t,
      "a stopped VM: attach is recorded, and the disk is there at its next start",
      async () => {
        await ok("vm", "stop", "g1", "--wait");
        await ok("vm", "disk", "attach", "g1", "d1");
        await ok("vm", "start", "g1", "--wait");
        await eventually(
          "the guest boots with the volume",
          async () => [...(await disks("g1")).values()].includes(128 * MiB / 512) || undefined,
          120_000,
        );
        await ok("vm", "stop", "g1", "--wait");
        await ok("vm", "disk", "detach", "g1", "d1");
        await ok("volume", "delete", "d1");
      },
    );

    await step(t, "a pool with something in it is not deleted", async () => {
      await refused(/holds \d VM disk\(s\) \(b1/, "pool", "delete", "fast");
      await ok("vm", "delete", "b1", "--force");
      await eventually(
        "b1 is gone",
        async () => (await run("vm", "show", "b1")).code === 1 || undefined,
        60_000,
      );
      await ok("pool", "delete", "fast");
      const mounts = await Deno.readTextFile("/proc/self/mounts");
      assert(!mounts.includes(`${base}/fast.img.mnt`), "the loop-backed pool is unmounted");
    });
  } finally {
    await cluster.stop();
    await sh("bash", LOOP_SCRIPT, "down", base).catch(() => {});
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
});
