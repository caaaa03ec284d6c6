/**
 * Backups on the host side: this host runs the backup, restore and verify
 * operations whose runner it is. The leader records such an operation
 * (core/cluster/backup_service.ts); the host's runner (host/operations/) starts
 * it, reports progress while it runs, and its outcome. An operation this host
 * ran when its node process stopped is marked failed at the next start (its
 * partial files are gone: every step writes to a temporary name, or removes
 * what it made on failure).
 *
 * - backup: the jobs of host/backup/job.ts on the VM's running QEMU, or on a
 *   `qemu-storage-daemon` for a stopped VM; then every file is checksummed
 *   (per 64 KiB block, once), the manifest written and the backup recorded;
 * - verify: every block of every file re-read and checked against the manifest;
 * - restore: the chain converted into the VM's volumes, either of a new VM the
 *   leader created for it (`--as`; removed again if the restore fails) or of a
 *   stopped VM in place (its volumes replaced only once every disk converted).
 *
 * Format: host/backup/format.ts. QMP steps: host/backup/job.ts.
 *
 * @module
 */
import { join } from "node:path";
import { ConflictError, NotFoundError, NovaError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { fsyncFile, renameDurably, TEMP_PREFIX } from "../../core/store/mod.ts";
import type {
  BackupReads,
  BackupRecord,
  BackupTargetRecord,
  OperationRecord,
  VmDisk,
  VmRecord,
} from "../../core/fsm/mod.ts";
import type { QemuVm } from "../kvm/qemu.ts";
import type { QemuUser } from "../kvm/confine.ts";
import { blockNodeInfo, type QmpExecutor } from "../kvm/commands.ts";
import type { VolumePool } from "../storage/dir_pool.ts";
import {
  BLOCK_BYTES,
  checkChain,
  checksumFile,
  layout,
  type Manifest,
  MANIFEST_FORMAT,
  readChainTop,
  type StagedManifest,
  stageManifest,
  verifyBackup,
  type VerifyReport,
} from "./format.ts";
import { type BlockHasher, HasherPool } from "./block_hasher.ts";
import {
  bitmapBackups,
  finishBackupJobs,
  incrementalBlocker,
  type JobRequest,
  startBackupJobs,
} from "./job.ts";
import { StorageDaemon } from "./storage_daemon.ts";
import { HostOperationRunner, type OperationCluster } from "../operations/mod.ts";
import { convertChain } from "./restore.ts";

export * from "./format.ts";
export { BITMAP_PREFIX, bitmapName } from "./job.ts";

/** Operation kinds this module runs. */
export const BACKUP_OPERATION_KINDS = ["backup", "restore", "verify"] as const;

/** What the runner needs of the cluster: replicated reads and proposals. */
export interface BackupCluster extends OperationCluster {
  readonly backups: BackupReads;
  vm(name: string): VmRecord | null;
}

/** What the runner needs of the host's VM side (host/vm_host.ts's VmHost). */
export interface BackupHost {
  serialize<T>(name: string, fn: () => Promise<T>): Promise<T>;
  mine(name: string): VmRecord;
  live(name: string): QemuVm | null;
  poolOf(d: VmDisk): VolumePool;
  readonly driver: { user: QemuUser | null };
  /** Whether this host has applied everything the leader had committed when it started. */
  isCaughtUp(): boolean;
}

/** Runs this host's backup, restore and verify operations. */
export class BackupRunner extends HostOperationRunner<BackupCluster> {
  protected readonly kinds = BACKUP_OPERATION_KINDS;
  /** Hashing workers, kept warm between backups and verifies. */
  readonly #hashers = new HasherPool();

  /**
   * @param stateFile where the ids of the operations this host runs are kept (so that after a
   *   restart it knows which ones it was running when it stopped)
   */
  constructor(cluster: BackupCluster, private readonly host: BackupHost, stateFile: string) {
    super(cluster, host, stateFile);
  }

  override stop(): void {
    super.stop();
    this.#hashers.close(true);
  }

  protected execute(op: OperationRecord, signal: AbortSignal): Promise<Record<string, unknown>> {
    if (op.kind === "backup") return this.backup(op, signal);
    if (op.kind === "verify") return this.verify(op, signal);
    return this.restore(op, signal);
  }

  protected auditAction(op: OperationRecord): string {
    return `backup.${op.kind}`;
  }

  protected override failureResult(
    _op: OperationRecord,
    err: unknown,
  ): Record<string, unknown> | null {
    return err instanceof VerifyFailed ? { ...err.report } : null;
  }

  /** A backup cut short: the files it wrote go. */
  protected override async cleanUpInterrupted(op: OperationRecord): Promise<void> {
    const t = op.kind === "backup" ? this.cluster.backups.target(String(op.params.target)) : null;
    const id = String(op.params.backup);
    if (t && !this.cluster.backups.get(id)) {
      const dir = join(t.path, layout.dir(op.target));
      try {
        for await (const e of Deno.readDir(dir)) {
          const mine = e.name.startsWith(`${id}.`) || e.name.startsWith(`${TEMP_PREFIX}${id}.`);
          if (mine) await Deno.remove(join(dir, e.name)).catch(() => {});
        }
      } catch { /* no directory: nothing was written */ }
    }
  }

  private target(name: string): BackupTargetRecord {
    const t = this.cluster.backups.target(name);
    if (!t) throw new NotFoundError("backup target", name);
    return t;
  }

  // ---- backup ------------------------------------------------------------------------

  private async backup(op: OperationRecord, signal: AbortSignal): Promise<Record<string, unknown>> {
    const id = String(op.params.backup);
    if (this.cluster.backups.get(id)) {
      throw new ConflictError(`backup ${id} already exists; this operation ran before`);
    }
    const target = this.target(String(op.params.target));
    const wantIncremental = op.params.incremental === true;
    const dir = join(target.path, layout.dir(op.target));
    // Taken now, so that a new one is ready (compiled) once the copy is done.
    const hasher = this.#hashers.acquire();
    try {
      return await this.backupWith(op, signal, id, target, wantIncremental, dir, hasher);
    } finally {
      this.#hashers.release(hasher);
    }
  }

  private async backupWith(
    op: OperationRecord,
    signal: AbortSignal,
    id: string,
    target: BackupTargetRecord,
    wantIncremental: boolean,
    dir: string,
    hasher: BlockHasher,
  ): Promise<Record<string, unknown>> {
    const onProgress = this.progress(op.id);
    const made = await this.host.serialize(op.target, async () => {
      const tLock = performance.now();
      const vm = this.host.mine(op.target);
      const qemu = this.host.live(vm.name);
      let daemon: StorageDaemon | null = null;
      let qmp: QmpExecutor;
      if (qemu) {
        qmp = qemu.qmp;
      } else {
        const disks = [];
        for (const d of vm.disks) {
          const pool = this.host.poolOf(d);
          if (!(await pool.has(d.volume))) {
            throw new ConflictError(
              `${vm.name} has never run: its disk ${d.id} does not exist yet, nothing to back up`,
            );
          }
          disks.push({ node: d.id, path: pool.pathOf(d.volume) });
        }
        daemon = await StorageDaemon.start(disks);
        qmp = daemon.qmp;
      }
      try {
        const disks = [];
        for (const d of vm.disks) {
          const info = await blockNodeInfo(qmp, d.id);
          if (!info) throw new NovaError("internal", `QEMU has no block node ${d.id}`);
          disks.push({
            id: d.id,
            node: d.id,
            virtualBytes: info.virtualBytes,
            bitmaps: info.bitmaps,
          });
        }
        const { parent, fullReason } = wantIncremental
          ? await this.chooseParent(vm.name, target, disks)
          : { parent: null, fullReason: null };
        const req: JobRequest = {
          id,
          dir,
          disks,
          parent,
          agent: qemu ? qemu.agent : null,
          qemuUser: qemu ? this.host.driver.user : null,
          signal,
          onProgress: (done, total) => onProgress("copying", done, total),
        };
        const t0 = performance.now();
        const prepareMs = Math.round(t0 - tLock);
        // A running VM's copy goes on outside the VM's lock (a stop or restart need not wait
        // for it; it ends the jobs, and the backup fails). A storage daemon holds the images'
        // locks: a stopped VM stays locked until its backup is done.
        const started = await startBackupJobs(qmp, req);
        const job = qemu ? null : await finishBackupJobs(qmp, req, started);
        await job?.dropOldBitmaps(); // before the daemon closes the images
        return { vm, parent, fullReason, req, started, job, qemu, t0, prepareMs };
      } finally {
        await daemon?.stop();
      }
    });
    const { vm, parent, fullReason } = made;
    const job = made.job ?? await finishBackupJobs(made.qemu!.qmp, made.req, made.started);
    const live = !!made.qemu;
    const copyMs = Math.round(performance.now() - made.t0);
    const tSums = performance.now();
    // The files to disk (QEMU did not sync them) while they are read back for checksums;
    // the manifest names them only once both are done.
    const synced = Promise.all(job.disks.map((d) => fsyncFile(join(dir, d.file))));
    synced.catch(() => {}); // awaited below, or its error dropped with the backup's
    let staged: StagedManifest | null = null;
    try {
      // Checksums of what landed in the target, read back from it.
      const sizes = await Promise.all(job.disks.map((d) => Deno.stat(join(dir, d.file))));
      const total = sizes.reduce((n, s) => n + s.size, 0);
      let done = 0;
      const disks = [];
      for (const d of job.disks) {
        const sums = await checksumFile(join(dir, d.file), {
          signal,
          hasher,
          onBytes: (n) => onProgress("checksumming", done += n, total),
        });
        disks.push({
          id: d.id,
          file: d.file,
          backing: parent ? layout.file(parent.id, d.id) : null,
          virtualBytes: d.virtualBytes,
          fileBytes: sums.bytes,
          copiedBytes: d.copiedBytes,
          blocksSha256: sums.blocksSha256,
          blockBytes: BLOCK_BYTES,
          blocks: sums.blocks,
        });
      }
      const manifest: Manifest = {
        format: MANIFEST_FORMAT,
        id,
        vm: vm.name,
        vmUuid: vm.uuid,
        kind: parent ? "incremental" : "full",
        parent: parent?.id ?? null,
        chain: parent?.chain ?? id,
        createdAt: new Date().toISOString(),
        node: this.cluster.nodeName,
        spec: { image: vm.image, cpus: vm.cpus, memoryMiB: vm.memoryMiB },
        fsFrozen: job.fsFrozen,
        freezeMs: job.freezeMs,
        fullReason,
        disks,
      };
      const checksumMs = Math.round(performance.now() - tSums);
      // The replaced bitmaps go now, and may still be going when the backup is recorded:
      // one left by a stop in between is dropped by the next backup.
      void job.dropOldBitmaps().then(() =>
        log.debug("old backup bitmaps dropped", { op: op.id, ms: job.phasesMs.bitmaps })
      );
      // Written and synced while the files may still be syncing; named only after.
      staged = await stageManifest(dir, manifest);
      const manifestSha256 = staged.sha256;
      await synced;
      const syncWaitMs = Math.round(performance.now() - tSums) - checksumMs;
      const tRecord = performance.now();
      await staged.commit();
      staged = null;
      await this.cluster.report({
        op: "backup.record",
        backup: {
          id,
          vm: vm.name,
          target: target.name,
          kind: manifest.kind,
          parent: manifest.parent,
          chain: manifest.chain,
          dir: layout.dir(vm.name),
          manifest: layout.manifest(id),
          manifestSha256,
          disks: disks.map((d) => ({
            id: d.id,
            file: d.file,
            virtualBytes: d.virtualBytes,
            fileBytes: d.fileBytes,
            copiedBytes: d.copiedBytes,
          })),
          fullReason,
          node: this.cluster.nodeName,
        },
        at: Date.now(),
      });
      const recordMs = Math.round(performance.now() - tRecord);
      return {
        backup: id,
        kind: manifest.kind,
        parent: manifest.parent,
        fullReason,
        live,
        fsFrozen: job.fsFrozen,
        freezeMs: job.freezeMs,
        freezePhasesMs: job.freezePhasesMs,
        copiedBytes: disks.reduce((n, d) => n + d.copiedBytes, 0),
        fileBytes: disks.reduce((n, d) => n + d.fileBytes, 0),
        copyMs,
        prepareMs: made.prepareMs,
        jobPhasesMs: job.phasesMs,
        checksumMs,
        syncWaitMs,
        recordMs,
      };
    } catch (err) {
      await staged?.discard();
      // Unless the record made it after all (its answer was lost): then the files are the backup.
      if (!this.cluster.backups.get(id)) await removeFiles(dir, id, job.disks.map((d) => d.file));
      throw err;
    }
  }

  /**
   * The backup an incremental one builds on: the one the disks' bitmap counts
   * from, when it is still recorded, on this target, readable, and the
   * bitmaps are intact; otherwise none, and why.
   */
  private async chooseParent(
    vm: string,
    target: BackupTargetRecord,
    disks: Parameters<typeof incrementalBlocker>[1],
  ): Promise<{ parent: BackupRecord | null; fullReason: string | null }> {
    const full = (why: string) => ({ parent: null, fullReason: `full backup: ${why}` });
    const ids = bitmapBackups(disks[0]?.bitmaps ?? []);
    if (!ids.length) {
      return full(
        `disk ${
          disks[0]?.id
        } has no dirty bitmap (no earlier backup, or the disk was restored or recreated)`,
      );
    }
    // The newest recorded one (a bitmap of a backup that never finished is ignored).
    const parent = ids.map((id) => this.cluster.backups.get(id))
      .filter((b): b is BackupRecord => b !== null)
      .sort((a, b) => a.createdAt - b.createdAt).pop();
    if (!parent) {
      return full(
        `the disks' dirty bitmap counts from backup ${ids.join(", ")}, which no longer exists`,
      );
    }
    const pid = parent.id;
    if (parent.vm !== vm) return full(`backup ${pid} is of another VM`);
    if (parent.target !== target.name) {
      return full(`the last backup ${pid} is on target ${parent.target}, not ${target.name}`);
    }
    const blocker = incrementalBlocker(parent, disks);
    if (blocker) return full(blocker);
    try {
      await checkChain(target.path, this.cluster.backups.chainOf(pid));
    } catch (err) {
      return full(`the chain of ${pid} cannot be read: ${(err as Error).message}`);
    }
    return { parent, fullReason: null };
  }

  // ---- verify ------------------------------------------------------------------------

  private async verify(op: OperationRecord, signal: AbortSignal): Promise<Record<string, unknown>> {
    const b = this.cluster.backups.get(String(op.params.backup));
    if (!b) throw new NotFoundError("backup", String(op.params.backup));
    const onProgress = this.progress(op.id);
    const hasher = this.#hashers.acquire();
    const report = await verifyBackup(this.target(b.target).path, b, {
      signal,
      hasher,
      onProgress: (done, total) => onProgress("verifying", done, total),
    }).finally(() => this.#hashers.release(hasher));
    if (report.badBlocks.length || report.badFiles.length) throw new VerifyFailed(report);
    return { ...report, ok: true };
  }

  // ---- restore -----------------------------------------------------------------------

  private async restore(
    op: OperationRecord,
    signal: AbortSignal,
  ): Promise<Record<string, unknown>> {
    const id = String(op.params.backup);
    const vmName = String(op.params.vm);
    const mode = op.params.mode === "in-place" ? "in-place" : "as";
    const onProgress = this.progress(op.id);
    try {
      return await this.host.serialize(vmName, async () => {
        const b = this.cluster.backups.get(id);
        if (!b) throw new NotFoundError("backup", id);
        const target = this.target(b.target);
        const t0 = performance.now();
        const chain = this.cluster.backups.chainOf(id);
        const top = await readChainTop(target.path, chain);
        const tChecked = performance.now();
        const vm = this.host.mine(vmName);
        if (this.host.live(vmName)) {
          throw new ConflictError(`${vmName} is running; stop it before restoring in place`);
        }
        // Every disk converted to a temporary file first; the volumes change only after.
        let tConverted = 0, tPlaced = 0;
        const staged: { d: VmDisk; tmp: string; dst: string }[] = [];
        try {
          for (const [i, d] of vm.disks.entries()) {
            const md = top.disks.find((x) =>
              x.id === (d.source.kind === "backup" ? d.source.disk : d.id)
            );
            if (!md) {
              if (mode === "in-place") continue; // a disk added after the backup keeps its data
              throw new ConflictError(`backup ${id} has no disk ${d.id}`);
            }
            const pool = this.host.poolOf(d);
            const tmp = join(pool.root, `${TEMP_PREFIX}restore-${crypto.randomUUID()}.qcow2`);
            staged.push({ d, tmp, dst: pool.pathOf(d.volume) });
            await convertChain(join(target.path, b.dir, md.file), tmp, {
              signal,
              onPercent: (p) => onProgress("restoring", i * 100 + p, vm.disks.length * 100),
            });
          }
          tConverted = performance.now();
          for (const s of staged) await renameDurably(s.tmp, s.dst);
          tPlaced = performance.now();
        } catch (err) {
          for (const s of staged) await Deno.remove(s.tmp).catch(() => {});
          throw err;
        }
        if (mode === "as" && op.params.start === true) {
          await this.cluster.report({
            op: "vm.desired",
            name: vmName,
            desired: "running",
            by: `host:${this.cluster.nodeName}`,
            at: Date.now(),
          });
        }
        return {
          backup: id,
          vm: vmName,
          mode,
          disks: staged.map((s) => s.d.id),
          chain: chain.map((c) => c.id),
          // Where the time went: the chain checked, converted, the volumes put in place.
          phasesMs: {
            check: Math.round(tChecked - t0),
            convert: Math.round(tConverted - tChecked),
            volumes: Math.round(tPlaced - tConverted),
          },
        };
      });
    } catch (err) {
      if (mode === "as") {
        // Nothing half-restored: the VM made for this restore goes again.
        await this.cluster.report({
          op: "vm.desired",
          name: vmName,
          desired: "deleted",
          by: `host:${this.cluster.nodeName}`,
          at: Date.now(),
        }).catch((e) => log.warn("cannot remove the VM of a failed restore", { error: String(e) }));
      }
      throw err;
    }
  }
}

/** A verify that found bad blocks: the operation fails with the report as its result. */
class VerifyFailed extends NovaError {
  constructor(readonly report: VerifyReport) {
    const first = report.badBlocks.slice(0, 3).map((b) =>
      `${b.file} block ${b.index} (offset ${b.offset})`
    );
    super(
      "conflict",
      `backup ${report.backup}: ${report.badBlocks.length} block(s) do not match their checksum` +
        (first.length ? ` (${first.join(", ")})` : "") +
        (report.badFiles.length ? `; files differ: ${report.badFiles.join(", ")}` : ""),
      report,
    );
  }
}

async function removeFiles(dir: string, id: string, files: string[]): Promise<void> {
  for (const f of [...files, layout.manifest(id), layout.sums(id)]) {
    await Deno.remove(join(dir, f)).catch(() => {});
  }
}

/** Removes backup `b`'s files from its target (after its record was deleted). */
export async function removeBackupFiles(targetPath: string, b: BackupRecord): Promise<void> {
  await removeFiles(join(targetPath, b.dir), b.id, b.disks.map((d) => d.file));
}

/** Checks the chain ending at `b` (the full backup first); returns `b`'s manifest. */
export async function checkRestorable(
  targetPath: string,
  chain: BackupRecord[],
): Promise<Manifest> {
  return await readChainTop(targetPath, chain);
}
