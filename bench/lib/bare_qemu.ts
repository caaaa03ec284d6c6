/**
 * Anchors for VM benchmarks: the test guest launched by hand with exactly the
 * arguments novactl's driver would use (minus `-S`: it runs at once), with no
 * cluster, reconcile loop or Raft in between.
 */
import {
  type LaunchSpec,
  type NicSpec,
  processAlive,
  qemuBinaryVersion,
  QemuDriver,
  QmpClient,
  spawnDetached,
} from "../../host/kvm/mod.ts";
import { testGuest } from "./guest.ts";
import { DirPool } from "../../host/storage/mod.ts";

/** Spawns the guest (detached, as the driver does) and connects to its QMP socket. */
export async function launchBare(
  dir: string,
  opts: {
    name: string;
    memoryMiB: number;
    disk: string;
    extraArgs?: string[];
    uuid?: string;
    nics?: NicSpec[];
    /** A NoCloud seed ISO, attached as novactl's host attaches one (a read-only raw disk). */
    seed?: string;
    /** Runs QEMU in this network namespace (`ip netns exec`), e.g. a host's, for its taps. */
    netns?: string;
    /**
     * Devices as a VM manager's launch spec has them (serial socket and VNC, display, PCIe
     * ports), so the anchor's guest boots on the same virtual hardware; default: none of them.
     */
    devices?: Pick<LaunchSpec, "consoles" | "display" | "diskPorts">;
  },
): Promise<QmpClient> {
  const guest = await testGuest();
  // Not init(): no user to drop to (the anchor runs as the caller), but the options of this QEMU.
  const driver = new QemuDriver(dir);
  driver.version = await qemuBinaryVersion();
  const spec = {
    name: opts.name,
    uuid: opts.uuid ?? crypto.randomUUID(),
    cpus: 1,
    memoryMiB: opts.memoryMiB,
    accel: "tcg" as const,
    kernel: { path: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
    disks: [
      { id: "root", path: opts.disk, format: "qcow2" as const },
      ...(opts.seed
        ? [{ id: "seed", path: opts.seed, format: "raw" as const, readOnly: true }]
        : []),
    ],
    nics: opts.nics ?? [{ id: "net0", mac: "52:54:00:00:00:01" }],
    generation: 0,
    ...(opts.devices ?? {}),
  };
  const p = driver.paths(spec.name);
  await Deno.mkdir(p.dir, { recursive: true });
  const args = [...driver.args(spec, p).filter((a) => a !== "-S"), ...(opts.extraArgs ?? [])];
  // Started as the driver starts QEMU (detached, not daemonized: its -sandbox denies the fork
  // -daemonize needs); ready once its QMP socket answers.
  // `ip netns exec` execs QEMU in place: the pid stays QEMU's.
  const netns = opts.netns ? ["ip", "netns", "exec", opts.netns] : [];
  const pid = spawnDetached([...netns, "qemu-system-x86_64", ...args], p.stderr);
  const deadline = performance.now() + 30_000;
  for (;;) {
    const qmp = await QmpClient.connect(p.qmp, { timeoutMs: 1_000 }).catch(() => null);
    if (qmp) return qmp;
    if (!processAlive(pid)) throw new Error(`bare QEMU for ${opts.name} exited while starting`);
    if (performance.now() > deadline) {
      Deno.kill(pid, "SIGKILL");
      throw new Error(`bare QEMU for ${opts.name} did not serve QMP within 30 s`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function quitBare(qmp: QmpClient): Promise<void> {
  await qmp.execute("quit").catch(() => {});
  qmp.close();
}

/**
 * The anchor for a VM start: a fresh 1 GiB qcow2 in `dir`/pool (like a new VM's), then the guest
 * launched by hand; spawn → QMP `query-status` running, in ms. The QEMU is quit afterwards.
 */
export async function timeBareStart(dir: string, name: string, memoryMiB: number): Promise<number> {
  const pool = await new DirPool(`${dir}/pool`).init();
  const disk = (await pool.create(name, 2 ** 30)).path;
  const t0 = performance.now();
  const qmp = await launchBare(`${dir}/vms`, { name, memoryMiB, disk });
  while ((await qmp.execute<{ status: string }>("query-status")).status !== "running") {
    await new Promise((r) => setTimeout(r, 1));
  }
  const ms = performance.now() - t0;
  await quitBare(qmp);
  await pool.delete(name).catch(() => {});
  return ms;
}
