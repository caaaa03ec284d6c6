/**
 * The QMP side of live migration between two QEMU processes on two hosts.
 *
 * Disks on shared storage stay where they are. Disks on a host-local pool are
 * copied while the guest runs: the destination exports its (empty) disks over
 * NBD, the source mirrors into them (`blockdev-mirror`, sync=full) until the
 * mirror is in sync, then RAM and device state are migrated over TCP and the
 * mirror is cancelled at switchover (the destination already has every block).
 */
import { ConflictError, TimeoutError } from "../../core/errors/mod.ts";
import type { QemuVm } from "./qemu.ts";

export interface MigrationProgress {
  phase: "disks" | "memory" | "switchover" | "done";
  percent: number;
  transferredBytes: number;
  totalBytes: number;
}

export interface MigrationResult {
  totalMs: number;
  downtimeMs: number;
  transferredBytes: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Destination: exports the incoming VM's local disks over NBD for the source to mirror into.
 * QEMU binds port 0 itself (no window for another process to take a pre-picked port); QMP
 * does not say which port the NBD server got, so it is read from QEMU's own listening
 * sockets in /proc. Call before `listenForMigration`, so the NBD listener is QEMU's only one.
 * Returns the bound port.
 */
export async function exportDisksForMirror(
  dest: QemuVm,
  host: string,
  diskIds: string[],
): Promise<number> {
  const before = await listeningTcpPorts(dest.pid);
  await dest.qmp.execute("nbd-server-start", {
    addr: { type: "inet", data: { host, port: "0" } },
  });
  const added = [...await listeningTcpPorts(dest.pid)].filter((port) => !before.has(port));
  if (added.length !== 1) {
    await dest.qmp.execute("nbd-server-stop").catch(() => {});
    throw new ConflictError(
      `cannot tell the NBD server's port: QEMU ${dest.pid} opened ${added.length} listeners`,
    );
  }
  for (const id of diskIds) {
    await dest.qmp.execute("block-export-add", {
      type: "nbd",
      id: `mig-${id}`,
      "node-name": id,
      name: id,
      writable: true,
    });
  }
  return added[0];
}

/** TCP ports process `pid` listens on, from its socket fds and its network namespace's tables. */
export async function listeningTcpPorts(pid: number): Promise<Set<number>> {
  const inodes = new Set<string>();
  for await (const entry of Deno.readDir(`/proc/${pid}/fd`)) {
    const target = await Deno.readLink(`/proc/${pid}/fd/${entry.name}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]);
  }
  const ports = new Set<number>();
  for (const table of ["tcp", "tcp6"]) {
    const text = await Deno.readTextFile(`/proc/${pid}/net/${table}`).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      const LISTEN = "0A";
      if (fields.length > 9 && fields[3] === LISTEN && inodes.has(fields[9])) {
        ports.add(parseInt(fields[1].split(":").at(-1)!, 16));
      }
    }
  }
  return ports;
}

/** Destination, after switchover (or abort): stop serving the disks. */
export async function stopDiskExports(dest: QemuVm): Promise<void> {
  await dest.qmp.execute("nbd-server-stop").catch(() => {});
}

/**
 * Destination: waits for the migration stream on a port QEMU binds itself (port 0) and
 * returns that port.
 */
export async function listenForMigration(dest: QemuVm, host: string): Promise<number> {
  await setCapabilities(dest);
  return await incomingOnFreePort(dest.qmp, host);
}

/** What `incomingOnFreePort` needs of a QMP connection. */
export interface QmpExecutor {
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
}

/**
 * `migrate-incoming` on `tcp:HOST:0` for a QEMU started with `-incoming defer`: the port QEMU
 * bound is read back from `query-migrate` (`socket-address`, QEMU ≥ 4.0), so no other process
 * can take it between choosing and binding.
 */
export async function incomingOnFreePort(qmp: QmpExecutor, host: string): Promise<number> {
  await qmp.execute("migrate-incoming", { uri: `tcp:${host}:0` });
  const info = await qmp.execute<{ "socket-address"?: { type: string; port?: string }[] }>(
    "query-migrate",
  );
  const port = Number(info["socket-address"]?.find((a) => a.type === "inet")?.port);
  if (!(port > 0)) {
    throw new ConflictError(`QEMU did not report its migration port: ${JSON.stringify(info)}`);
  }
  return port;
}

async function setCapabilities(vm: QemuVm): Promise<void> {
  await vm.qmp.execute("migrate-set-capabilities", {
    capabilities: [{ capability: "events", state: true }],
  });
}

interface BlockJob {
  device: string;
  len: number;
  offset: number;
  ready: boolean;
  status: string;
}

/** Source: mirrors each local disk into the destination's NBD export; resolves once all are in sync. */
export async function mirrorDisks(
  source: QemuVm,
  dest: { host: string; port: number },
  diskIds: string[],
  onProgress: (p: MigrationProgress) => void,
  signal: AbortSignal,
): Promise<void> {
  for (const id of diskIds) {
    await source.qmp.execute("blockdev-add", {
      driver: "nbd",
      "node-name": `mig-target-${id}`,
      server: { type: "inet", host: dest.host, port: String(dest.port) },
      export: id,
    });
    await source.qmp.execute("blockdev-mirror", {
      "job-id": `mig-mirror-${id}`,
      device: id,
      target: `mig-target-${id}`,
      sync: "full",
    });
  }
  for (;;) {
    if (signal.aborted) throw new ConflictError("migration aborted");
    const jobs = (await source.qmp.execute<BlockJob[]>("query-block-jobs"))
      .filter((j) => j.device.startsWith("mig-mirror-"));
    if (jobs.length < diskIds.length) {
      throw new ConflictError("a disk mirror stopped before it was in sync");
    }
    const len = jobs.reduce((n, j) => n + j.len, 0);
    const done = jobs.reduce((n, j) => n + j.offset, 0);
    onProgress({
      phase: "disks",
      percent: len ? Math.floor((done / len) * 100) : 100,
      transferredBytes: done,
      totalBytes: len,
    });
    if (jobs.every((j) => j.ready)) return;
    await sleep(100);
  }
}

/** Source: drops the mirrors (after switchover they are complete; on abort they are discarded). */
export async function cancelMirrors(source: QemuVm, diskIds: string[]): Promise<void> {
  for (const id of diskIds) {
    await source.qmp.execute("block-job-cancel", { device: `mig-mirror-${id}`, force: true })
      .catch(() => {});
  }
  // Wait for the jobs to go away before removing their target nodes.
  for (let i = 0; i < 100; i++) {
    const jobs = await source.qmp.execute<BlockJob[]>("query-block-jobs").catch(() => []);
    if (!jobs.some((j) => j.device.startsWith("mig-mirror-"))) break;
    await sleep(20);
  }
  for (const id of diskIds) {
    await source.qmp.execute("blockdev-del", { "node-name": `mig-target-${id}` }).catch(() => {});
  }
}

interface MigrateInfo {
  status: string;
  "total-time"?: number;
  downtime?: number;
  "error-desc"?: string;
  ram?: { transferred: number; total: number; remaining: number };
}

/**
 * Source: streams RAM and device state to the destination; the guest keeps
 * running until the remaining dirty memory fits the downtime limit.
 */
export async function migrateMemory(
  source: QemuVm,
  dest: { host: string; port: number },
  opts: { downtimeLimitMs: number; bandwidthBytesPerSec?: number; timeoutMs: number },
  onProgress: (p: MigrationProgress) => void,
  signal: AbortSignal,
): Promise<MigrationResult> {
  await setCapabilities(source);
  await source.qmp.execute("migrate-set-parameters", {
    "downtime-limit": opts.downtimeLimitMs,
    "max-bandwidth": opts.bandwidthBytesPerSec ?? 10 * 2 ** 30,
  });
  // The MIGRATION event ends the wait the moment QEMU finishes: polling alone would add up to
  // one poll interval to the guest's pause (the commit and resume come after this returns).
  const finished = source.qmp.waitForEvent("MIGRATION", {
    timeoutMs: opts.timeoutMs,
    match: (e) => ["completed", "failed", "cancelled"].includes(String(e.data?.status)),
  });
  finished.catch(() => {});
  await source.qmp.execute("migrate", { uri: `tcp:${dest.host}:${dest.port}` });
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    let info = await source.qmp.execute<MigrateInfo>("query-migrate");
    if (info.status === "completed" && !info["total-time"]) {
      // Right after the completion event the statistics may not be filled in yet.
      await sleep(5);
      info = await source.qmp.execute<MigrateInfo>("query-migrate");
    }
    if (info.status === "completed") {
      return {
        totalMs: info["total-time"] ?? 0,
        downtimeMs: info.downtime ?? 0,
        transferredBytes: info.ram?.transferred ?? 0,
      };
    }
    if (info.status === "failed" || info.status === "cancelled") {
      throw new ConflictError(`migration ${info.status}: ${info["error-desc"] ?? "no detail"}`);
    }
    if (info.ram) {
      const total = info.ram.total || 1;
      onProgress({
        phase: "memory",
        percent: Math.min(99, Math.floor(((total - info.ram.remaining) / total) * 100)),
        transferredBytes: info.ram.transferred,
        totalBytes: info.ram.total,
      });
    }
    if (signal.aborted || Date.now() > deadline) {
      await source.qmp.execute("migrate_cancel").catch(() => {});
      if (signal.aborted) throw new ConflictError("migration aborted");
      throw new TimeoutError(`migration did not converge in ${opts.timeoutMs} ms`);
    }
    await Promise.race([finished.catch(() => {}), sleep(50)]);
  }
}
