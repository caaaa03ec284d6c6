/**
 * The QMP side of live migration between two QEMU processes on two hosts.
 *
 * Disks on shared storage stay where they are. Disks on a host-local pool are
 * copied while the guest runs: the destination exports its (empty) disks over
 * NBD, the source mirrors into them (`blockdev-mirror`, sync=full) until the
 * mirror is in sync, then RAM and device state are migrated over TCP and the
 * mirror is cancelled at switchover (the destination already has every block).
 *
 * Both streams carry guest memory and disks, so both are TLS with the cluster's certificates
 * in both directions: the destination's listeners bind only the node's advertised address and
 * admit only the certificate of the source node (`tls-authz`), and the source checks that the
 * destination's certificate comes from the cluster CA and names the address it dialled.
 */
import { ConflictError, NovaError, TimeoutError } from "../../core/errors/mod.ts";
import {
  addAuthzList,
  addTlsCredsX509,
  blockdevAddNbd,
  blockdevDel,
  blockdevMirror,
  blockExportAddNbd,
  type BlockJob,
  blockJobCancel,
  cont,
  deleteObject,
  type ListenerTls,
  migrate,
  migrateCancel,
  migrateIncoming,
  migrateSetCapabilities,
  migrateSetParameters,
  nbdServerStart,
  nbdServerStop,
  type QmpExecutor,
  queryBlockJobs,
  queryMigrate,
  queryStatus,
  stop,
} from "./commands.ts";
import type { QemuUser } from "./confine.ts";
import type { QemuVm } from "./qemu.ts";
import type { QmpEvent } from "./qmp.ts";
import { nodeDnPatterns, type NodeTlsPaths, withQemuCredsDir } from "./tls.ts";

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
  /** When the source QEMU said `completed` (epoch ms, its event's time); 0 if not seen. */
  completedAt: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Ids of the QEMU objects migration uses (one migration at a time per QEMU). */
const SERVER_CREDS = "novactl-tls-server";
const CLIENT_CREDS = "novactl-tls-client";
const PEER_AUTHZ = "novactl-authz-peers";

/**
 * Destination: loads the node's certificate into `dest` as TLS server credentials that demand
 * a client certificate from the cluster CA, and an authorization list that admits only the
 * certificates of `peers` (node names). Returns what the NBD and migration listeners use.
 *
 * @throws {NovaError} "precondition_failed" when the node has no certificate files.
 */
export async function setUpIncomingTls(
  dest: QemuVm,
  paths: NodeTlsPaths,
  peers: string[],
): Promise<ListenerTls> {
  const owner = await processOwner(dest.pid);
  await deleteObject(dest.qmp, SERVER_CREDS);
  await deleteObject(dest.qmp, PEER_AUTHZ);
  await withQemuCredsDir(
    paths,
    owner,
    (dir) => addTlsCredsX509(dest.qmp, SERVER_CREDS, dir, "server"),
  );
  await addAuthzList(dest.qmp, PEER_AUTHZ, peers.flatMap(nodeDnPatterns));
  return { creds: SERVER_CREDS, authz: PEER_AUTHZ };
}

/**
 * Source: loads the node's certificate into `source` as TLS client credentials (the
 * destination's certificate must come from the cluster CA). Returns the credentials' id.
 */
export async function setUpOutgoingTls(source: QemuVm, paths: NodeTlsPaths): Promise<string> {
  const owner = await processOwner(source.pid);
  await deleteObject(source.qmp, CLIENT_CREDS);
  await withQemuCredsDir(
    paths,
    owner,
    (dir) => addTlsCredsX509(source.qmp, CLIENT_CREDS, dir, "client"),
  );
  return CLIENT_CREDS;
}

/** The user QEMU runs as (after `-runas`), so the credentials it reads are its own; null: ours. */
async function processOwner(pid: number): Promise<QemuUser | null> {
  const st = await Deno.stat(`/proc/${pid}`);
  if (st.uid === null || st.gid === null || st.uid === Deno.uid()) return null;
  return { name: String(st.uid), uid: st.uid, gid: st.gid };
}

/**
 * Destination: exports the incoming VM's local disks over NBD (TLS, certified peers only) for
 * the source to mirror into. The server binds `host` (the node's advertised address, never a
 * wildcard) on port 0 itself (no window for another process to take a pre-picked port); QMP
 * does not say which port the NBD server got, so it is read from QEMU's own listening
 * sockets in /proc. Call before `listenForMigration`, so the NBD listener is QEMU's only one.
 * Returns the bound port.
 */
export async function exportDisksForMirror(
  dest: QemuVm,
  host: string,
  diskIds: string[],
  tls: ListenerTls,
): Promise<number> {
  refuseWildcard(host);
  const before = await listeningTcpPorts(dest.pid);
  await nbdServerStart(dest.qmp, { host, port: 0 }, tls);
  const added = [...await listeningTcpPorts(dest.pid)].filter((port) => !before.has(port));
  if (added.length !== 1) {
    await nbdServerStop(dest.qmp);
    throw new ConflictError(
      `cannot tell the NBD server's port: QEMU ${dest.pid} opened ${added.length} listeners`,
    );
  }
  for (const id of diskIds) await blockExportAddNbd(dest.qmp, `mig-${id}`, id, id, true);
  return added[0];
}

/** Listeners bind the advertised address: a wildcard would expose guest memory on every interface. */
function refuseWildcard(host: string): void {
  if (host === "" || host === "0.0.0.0" || host === "::" || host === "[::]") {
    throw new NovaError(
      "internal",
      `refusing to listen for migration on wildcard address "${host}"`,
    );
  }
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
  await nbdServerStop(dest.qmp);
}

/**
 * Destination: waits for the migration stream (TLS, certified peers only) on `host` and a
 * port QEMU binds itself (port 0), and returns that port.
 */
export async function listenForMigration(
  dest: QemuVm,
  host: string,
  tls: ListenerTls,
): Promise<number> {
  refuseWildcard(host);
  await setCapabilities(dest);
  await migrateSetParameters(dest.qmp, { "tls-creds": tls.creds, "tls-authz": tls.authz });
  return await incomingOnFreePort(dest.qmp, host);
}

export type { QmpExecutor };

/**
 * `migrate-incoming` on `tcp:HOST:0` for a QEMU started with `-incoming defer`: the port QEMU
 * bound is read back from `query-migrate` (`socket-address`, QEMU ≥ 4.0), so no other process
 * can take it between choosing and binding.
 */
export async function incomingOnFreePort(qmp: QmpExecutor, host: string): Promise<number> {
  await migrateIncoming(qmp, { host, port: 0 });
  const info = await queryMigrate(qmp);
  const port = Number(info["socket-address"]?.find((a) => a.type === "inet")?.port);
  if (!(port > 0)) {
    throw new ConflictError(`QEMU did not report its migration port: ${JSON.stringify(info)}`);
  }
  return port;
}

/**
 * Both ends: migration events, and `dirty-bitmaps`, so the disks' persistent dirty bitmaps
 * (host/backup/) move with the VM. Over NBD the destination's disks start blank, and a
 * mirror copies data, not bitmaps; on shared storage QEMU then hands them over in the stream
 * instead of through the image. Without it the next backup after a move would be full.
 */
async function setCapabilities(vm: QemuVm): Promise<void> {
  await migrateSetCapabilities(vm.qmp, { events: true, "dirty-bitmaps": true });
}

/**
 * Source: mirrors each local disk into the destination's NBD export over TLS (`tlsCreds` from
 * {@link setUpOutgoingTls}; the server's certificate must name `dest.host`); resolves once all
 * are in sync.
 */
export async function mirrorDisks(
  source: QemuVm,
  dest: { host: string; port: number },
  diskIds: string[],
  tlsCreds: string,
  onProgress: (p: MigrationProgress) => void,
  signal: AbortSignal,
): Promise<void> {
  for (const id of diskIds) {
    await blockdevAddNbd(source.qmp, `mig-target-${id}`, dest, id, {
      creds: tlsCreds,
      hostname: dest.host,
    });
    await blockdevMirror(source.qmp, `mig-mirror-${id}`, id, `mig-target-${id}`);
  }
  for (;;) {
    if (signal.aborted) throw new ConflictError("migration aborted");
    const jobs = (await queryBlockJobs(source.qmp))
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
    await blockJobCancel(source.qmp, `mig-mirror-${id}`).catch(() => {});
  }
  // Wait for the jobs to go away before removing their target nodes.
  for (let i = 0; i < 100; i++) {
    const jobs = await queryBlockJobs(source.qmp).catch((): BlockJob[] => []);
    if (!jobs.some((j) => j.device.startsWith("mig-mirror-"))) break;
    await sleep(20);
  }
  for (const id of diskIds) {
    await blockdevDel(source.qmp, `mig-target-${id}`).catch(() => {});
  }
}

/**
 * Destination, after the source reported `completed`: resumes the guest once QEMU has loaded
 * all of the stream. A `cont` that arrives while it still loads only asks QEMU to start the
 * guest when done, and QEMU ignores that when the source was paused when it finished (a
 * stop-and-copy): it keeps the source's run state, and the guest would stay paused.
 * Resolves with QEMU's RESUME event.
 */
export async function resumeIncoming(dest: QemuVm, timeoutMs: number): Promise<QmpEvent> {
  const deadline = Date.now() + timeoutMs;
  while ((await queryStatus(dest.qmp, timeoutMs)) === "inmigrate") {
    if (Date.now() > deadline) {
      throw new TimeoutError(`QEMU ${dest.pid} still loading the migration after ${timeoutMs} ms`);
    }
    await sleep(5);
  }
  const resumed = dest.qmp.waitForEvent("RESUME", { timeoutMs });
  await cont(dest.qmp, timeoutMs);
  return await resumed;
}

/**
 * Whether a migration pauses the guest before its memory phase (stop-and-copy) instead of
 * streaming it live. Under TCG, QEMU before 9.0 loses guest writes during live migration:
 * the fast path of `cpu_physical_memory_sync_dirty_bitmap()` clears the migration dirty bits
 * of a whole RAM block without resetting the TCG TLB (`tlb_reset_dirty_range_all`), so the
 * guest keeps writing those pages through TLB entries that no longer mark them dirty until
 * it happens to flush its TLB (an address-space switch). Pages written that way after they
 * were sent never reach the destination, which then runs with parts of the kernel's memory
 * older than the rest: the probable cause of the virtio-net TX hang and the idle-task oops
 * seen after migrations in bench:net (not reproduced outside it). Fixed upstream in QEMU 9.0 (03bfc2188f, "physmem: Fix migration dirty bitmap
 * coherency with TCG memory access"); Debian bookworm's 7.2 does not carry it. A paused
 * guest writes nothing, so nothing is lost. KVM tracks dirty pages itself.
 */
export function stopAndCopy(
  mode: "auto" | "always" | "never",
  accel: string,
  qemu: { major: number },
): boolean {
  if (mode !== "auto") return mode === "always";
  return accel === "tcg" && qemu.major < 9;
}

/**
 * Source: streams RAM and device state to the destination over TLS (`tlsCreds` from
 * {@link setUpOutgoingTls}; the destination's certificate must name `dest.host`); the guest
 * keeps running until the remaining dirty memory fits the downtime limit, or, with
 * `stopFirst` ({@link stopAndCopy}), is paused before the stream starts.
 */
export async function migrateMemory(
  source: QemuVm,
  dest: { host: string; port: number },
  tlsCreds: string,
  opts: {
    downtimeLimitMs: number;
    bandwidthBytesPerSec?: number;
    timeoutMs: number;
    stopFirst?: boolean;
  },
  onProgress: (p: MigrationProgress) => void,
  signal: AbortSignal,
): Promise<MigrationResult> {
  await setCapabilities(source);
  await migrateSetParameters(source.qmp, {
    "downtime-limit": opts.downtimeLimitMs,
    "max-bandwidth": opts.bandwidthBytesPerSec ?? 10 * 2 ** 30,
    "tls-creds": tlsCreds,
    "tls-hostname": dest.host,
  });
  // The MIGRATION event ends the wait the moment QEMU finishes: polling alone would add up to
  // one poll interval to the guest's pause (the commit and resume come after this returns).
  const finished = source.qmp.waitForEvent("MIGRATION", {
    timeoutMs: opts.timeoutMs,
    match: (e) => ["completed", "failed", "cancelled"].includes(String(e.data?.status)),
  });
  let completedAt = 0;
  finished.then((e) => {
    completedAt = e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
  }, () => {});
  // The caller resumes the source if the migration fails, paused here or by QEMU.
  if (opts.stopFirst) await stop(source.qmp);
  await migrate(source.qmp, dest);
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    let info = await queryMigrate(source.qmp);
    if (info.status === "completed" && !info["total-time"]) {
      // Right after the completion event the statistics may not be filled in yet.
      await sleep(5);
      info = await queryMigrate(source.qmp);
    }
    if (info.status === "completed") {
      return {
        totalMs: info["total-time"] ?? 0,
        downtimeMs: info.downtime ?? 0,
        transferredBytes: info.ram?.transferred ?? 0,
        completedAt,
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
      await migrateCancel(source.qmp).catch(() => {});
      if (signal.aborted) throw new ConflictError("migration aborted");
      throw new TimeoutError(`migration did not converge in ${opts.timeoutMs} ms`);
    }
    await Promise.race([finished.catch(() => {}), sleep(50)]);
  }
}
