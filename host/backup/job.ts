/**
 * One backup of a VM's disks through QMP: of its running QEMU, or, for a
 * stopped VM, of a `qemu-storage-daemon` that opens its volumes for the
 * backup's length (the same commands, so the same bitmaps and format).
 *
 * Bitmaps: each disk carries one persistent dirty bitmap named after the
 * backup it counts from, `nvbk-ID`. It is created in the same `transaction`
 * as the backup jobs (the same point in time), so it records exactly the
 * writes after that backup. An incremental backup copies the blocks dirty in
 * its parent's bitmap while a new bitmap, named after itself, starts counting;
 * the parent's is removed once the jobs succeeded and the caller checksummed the
 * files, while it records the backup (on failure the new one is removed and the
 * parent's kept). Persistent bitmaps are stored in the qcow2 when QEMU closes the
 * image, so they survive restarts; one left "in use" by a QEMU that died is
 * inconsistent, and the next backup is full and says why.
 *
 * Files: QEMU runs as its own user (host/kvm/confine.ts) and opens the target
 * files after it dropped root, so each is created (empty) by the node, formatted by QEMU,
 * handed to that user while the job writes it, and taken back (root, 0600)
 * before it is checksummed. QEMU does not sync them (`cache.no-flush`): the caller syncs
 * each file to disk while it reads it back for checksums, before the manifest names it.
 * The chain directory is 0711.
 *
 * @module
 */
import { join } from "node:path";
import { ConflictError, NovaError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import type { BackupRecord } from "../../core/fsm/mod.ts";
import {
  type BackupPerf,
  bitmapAddAction,
  blockdevAddFile,
  blockdevAddQcow2OnNode,
  blockdevBackupAction,
  blockdevCreateQcow2,
  blockdevDel,
  blockDirtyBitmapRemove,
  blockJobSetSpeed,
  type DirtyBitmap,
  dirtyBitmaps,
  jobCancel,
  jobDismiss,
  type QmpExecutor,
  queryJobs,
  transaction,
} from "../kvm/commands.ts";
import type { GuestAgent } from "../kvm/qga.ts";
import type { QemuUser } from "../kvm/confine.ts";
import { type QmpListener, sleep } from "../kvm/qmp.ts";
import { layout } from "./format.ts";

/** Bitmap names novactl owns start with this. */
export const BITMAP_PREFIX = "nvbk-";

/** The bitmap that counts writes since backup `id`. */
export function bitmapName(id: string): string {
  return `${BITMAP_PREFIX}${id}`;
}

/** A disk to back up: its QMP block node and size. */
export interface JobDisk {
  id: string;
  node: string;
  virtualBytes: number;
}

/** What the caller decided to make. */
export interface JobRequest {
  id: string;
  /** The chain directory (absolute). */
  dir: string;
  disks: JobDisk[];
  /** The parent backup, for an incremental one. */
  parent: BackupRecord | null;
  /** The guest agent of a running guest, for fs-freeze/thaw. */
  agent: GuestAgent | null;
  /** Who QEMU runs as (target files are handed to it while written); null: as the node. */
  qemuUser: QemuUser | null;
  signal: AbortSignal;
  onProgress: (done: number, total: number) => void;
}

/** What a finished job produced, per disk. */
export interface JobResult {
  disks: { id: string; file: string; copiedBytes: number; virtualBytes: number }[];
  fsFrozen: boolean;
  freezeMs: number | null;
  freezePhasesMs: FreezePhases | null;
  /** Where the job's time went (see {@link JobPhases}). */
  phasesMs: JobPhases;
  /**
   * Removes the bitmaps the new one replaces; resolves once they are gone (never rejects: a
   * bitmap that could not be removed is logged, and the next backup removes it). Once only;
   * left to the caller, who starts it after its checksums: removing a persistent bitmap has
   * QEMU rewrite and flush the disk image's bitmap directory (17–24 ms here), which slowed
   * the checksums of an incremental backup it ran beside.
   */
  dropOldBitmaps(): Promise<void>;
}

/**
 * Where a backup job's time went: target files and nodes made (`files`), the point in time
 * (`start`: freeze, transaction, thaw sent), the thaw's answer and the jobs' release
 * (`release`), the copy (`copy`), old bitmaps dropped and target nodes removed (`cleanup`).
 */
export interface JobPhases {
  files: number;
  start: number;
  release: number;
  copy: number;
  cleanup: number;
  /** Removing the replaced bitmaps (which overlaps the checksums), once done. */
  bitmaps?: number;
}

/**
 * Decides whether an incremental backup on top of `parent` is possible: every disk has
 * the parent's bitmap, consistent, and the same size as in the parent. Returns null when
 * it is, else why not (the backup is then full).
 */
export function incrementalBlocker(
  parent: BackupRecord,
  disks: { id: string; virtualBytes: number; bitmaps: DirtyBitmap[] }[],
): string | null {
  const name = bitmapName(parent.id);
  for (const d of disks) {
    const bm = d.bitmaps.find((b) => b.name === name);
    if (!bm) return `disk ${d.id} has no dirty bitmap of backup ${parent.id}`;
    if (bm.inconsistent) {
      return `the dirty bitmap of disk ${d.id} is inconsistent (its QEMU did not shut down cleanly)`;
    }
    const pd = parent.disks.find((x) => x.id === d.id);
    if (!pd) return `disk ${d.id} is not in backup ${parent.id}`;
    if (pd.virtualBytes !== d.virtualBytes) return `disk ${d.id} was resized since ${parent.id}`;
  }
  if (parent.disks.length !== disks.length) return `the VM's disks changed since ${parent.id}`;
  return null;
}

/**
 * The backups novactl's bitmaps on a disk count from. Normally one; a backup cut short by
 * its node's restart can leave its own beside its parent's.
 */
export function bitmapBackups(bitmaps: DirtyBitmap[]): string[] {
  return bitmaps.filter((b) => b.name.startsWith(BITMAP_PREFIX)).map((b) =>
    b.name.slice(BITMAP_PREFIX.length)
  );
}

/** Backup jobs started by {@link startBackupJobs}, for {@link finishBackupJobs}. */
export interface StartedJobs {
  files: (JobDisk & { file: string })[];
  /** Target block nodes added to QEMU. */
  added: string[];
  /** Whether the transaction ran (jobs and the new bitmap exist). */
  started: boolean;
  fsFrozen: boolean;
  freezeMs: number | null;
  freezePhasesMs: FreezePhases | null;
  /**
   * Resolves once the guest answered its fs-thaw (never rejects); `freezeMs` and
   * `freezePhasesMs` are set then.
   */
  thawed: Promise<void>;
  /** Resolves once the jobs run at full speed (after the thaw); rejects if they cannot. */
  released: Promise<void>;
  phasesMs: JobPhases;
  /** When the transaction returned (performance.now()). */
  startedAt: number;
}

/**
 * Where a freeze window's time went: the agent's fs-freeze (sent → answered: the guest syncs,
 * then freezes), the QMP transaction, the agent's fs-thaw (sent → answered).
 */
export interface FreezePhases {
  freeze: number;
  transaction: number;
  thaw: number;
}

const ms = (x: number) => Math.round(x * 10) / 10;

/**
 * How the jobs copy: the kernel copies (`copy_file_range`, no pass through QEMU's buffers;
 * QEMU falls back to read/write where the two files cannot), in requests of up to 64 MiB,
 * 8 at a time, instead of QEMU's default of 64 KiB clusters through a buffer. A sequential
 * run of dirty blocks of an incremental backup is one request too. Measured here on a 1 GiB
 * full backup (bench:backup, warm): 0.45 s instead of 1.2–1.4 s.
 */
const COPY_PERF: BackupPerf = { useCopyRange: true, maxWorkers: 8, maxChunk: 64 * 2 ** 20 };

/**
 * The copy rate (bytes/s) jobs start at when the guest was frozen for them, until its thaw
 * is answered: the first request of each job copies at once, the rest wait. The point in
 * time is kept by copy-before-write, which no rate holds back, so nothing is lost; the
 * thawing guest (and the QEMU main loop that carries the agent's answer) does not compete
 * with up to 8 × 64 MiB of copying on a host with few cores.
 */
const HELD_SPEED = 1;

/** Lets the jobs of `s` copy at full speed (one whose first request was all may be done). */
async function release(qmp: QmpExecutor, s: StartedJobs): Promise<void> {
  if (!s.started) return;
  for (const d of s.files) {
    await blockJobSetSpeed(qmp, jobId(d), 0).catch(async (err) => {
      const job = (await queryJobs(qmp)).find((j) => j.id === jobId(d));
      if (job && ["created", "running", "paused", "ready", "standby"].includes(job.status)) {
        throw err;
      }
    });
  }
}

const targetNode = (d: JobDisk) => `nvbkt-${d.id}`.slice(0, 31);
const fileNode = (d: JobDisk) => `nvbkf-${d.id}`.slice(0, 31);
const createJobId = (d: JobDisk) => `nvbkc-${d.id}`.slice(0, 31);
const jobId = (d: JobDisk) => `nvbkj-${d.id}`.slice(0, 31);

/**
 * Runs the backup jobs: {@link startBackupJobs}, then {@link finishBackupJobs}, and waits
 * for the replaced bitmaps' removal. On failure
 * or abort nothing is left behind: targets removed, the new bitmap dropped, the parent's kept.
 */
export async function runBackupJobs(qmp: QmpExecutor, req: JobRequest): Promise<JobResult> {
  const r = await finishBackupJobs(qmp, req, await startBackupJobs(qmp, req));
  await r.dropOldBitmaps();
  return r;
}

/**
 * Creates the target files, freezes the guest's filesystems (when its agent answers), starts
 * every disk's job and its new bitmap in one transaction and sends the thaw: the point in
 * time. Everything that can be made before the freeze is (files, target nodes, the agent's
 * ping), so only the transaction runs inside the window: making a target on a slow or
 * distant target path must not hold the guest frozen. The copy then runs on in QEMU; the VM
 * may be handled meanwhile (a stop ends the jobs, and the backup fails). Cleans up after
 * itself when it fails.
 */
export async function startBackupJobs(qmp: QmpExecutor, req: JobRequest): Promise<StartedJobs> {
  const incremental = req.parent !== null;
  const s: StartedJobs = {
    files: req.disks.map((d) => ({ ...d, file: layout.file(req.id, d.id) })),
    added: [],
    started: false,
    fsFrozen: false,
    freezeMs: null,
    freezePhasesMs: null,
    thawed: Promise.resolve(),
    released: Promise.resolve(),
    phasesMs: { files: 0, start: 0, release: 0, copy: 0, cleanup: 0 },
    startedAt: 0,
  };
  const t0 = performance.now();
  // The agent is asked whether it answers while the targets are made.
  const agentUp = req.agent ? req.agent.ping(1_000).catch(() => false) : Promise.resolve(false);
  try {
    await Deno.mkdir(req.dir, { recursive: true, mode: 0o711 });
    for (const d of s.files) await makeTarget(qmp, req, s, d, incremental);
    const tFiles = performance.now();
    s.phasesMs.files = ms(tFiles - t0);
    const agentAnswers = await agentUp;
    const actions = s.files.flatMap((d) => [
      bitmapAddAction(d.node, bitmapName(req.id), true),
      blockdevBackupAction({
        jobId: jobId(d),
        device: d.node,
        target: targetNode(d),
        sync: incremental ? "incremental" : "full",
        bitmap: incremental ? bitmapName(req.parent!.id) : undefined,
        perf: COPY_PERF,
        // Held back while the guest thaws (see HELD_SPEED); copy-before-write is not.
        speed: agentAnswers ? HELD_SPEED : undefined,
      }),
    ]);
    // The point in time: frozen filesystems (when the agent answers) around the transaction.
    const frozen = agentAnswers ? await freezeGuest(req.agent!) : null;
    s.fsFrozen = frozen?.ok ?? false;
    const t1 = performance.now();
    try {
      await transaction(qmp, actions, false, 30_000);
      s.started = true;
    } finally {
      if (frozen) thawGuest(qmp, req.agent!, s, frozen, t1);
    }
    s.startedAt = performance.now();
    s.phasesMs.start = ms(s.startedAt - tFiles);
    return s;
  } catch (err) {
    await s.thawed;
    await undo(qmp, req, s);
    await teardown(qmp, req, s);
    throw err;
  }
}

/**
 * Makes disk `d`'s target: the file, empty, made here (QEMU's user may not create files in
 * the chain directory), formatted by QEMU (`blockdev-create`, what `qemu-img create` runs,
 * a few ms instead of starting a qemu-img process, 10–40 ms here), and its qcow2 node.
 */
async function makeTarget(
  qmp: QmpExecutor,
  req: JobRequest,
  s: StartedJobs,
  d: JobDisk & { file: string },
  incremental: boolean,
): Promise<void> {
  const path = join(req.dir, d.file);
  (await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 })).close();
  if (req.qemuUser) await Deno.chown(path, req.qemuUser.uid, req.qemuUser.gid);
  // Not synced by QEMU: the caller syncs the file while it reads it back for checksums.
  await blockdevAddFile(qmp, fileNode(d), path, { noFlush: true }).catch((err) => {
    throw /Permission denied/.test(String(err.message))
      ? new NovaError(
        "precondition_failed",
        `QEMU (user ${req.qemuUser?.name}) cannot open ${path}: make the target path ` +
          `traversable by that user on every host (chmod o+x on each directory)`,
      )
      : err;
  });
  s.added.push(fileNode(d));
  const backing = incremental ? layout.file(req.parent!.id, d.id) : null;
  await blockdevCreateQcow2(qmp, createJobId(d), fileNode(d), d.virtualBytes, backing);
  await waitJobs(qmp, [createJobId(d)], req.signal, () => {});
  await blockdevAddQcow2OnNode(qmp, targetNode(d), fileNode(d), { noFlush: true });
  s.added.push(targetNode(d));
}

/** A freeze sent to the guest's agent: when, and whether it froze. */
interface Freeze {
  sentAt: number;
  answeredAt: number;
  ok: boolean;
}

/** Sends fs-freeze; a guest that could not freeze is backed up without it. */
async function freezeGuest(agent: GuestAgent): Promise<Freeze> {
  const sentAt = performance.now();
  const ok = await agent.fsFreeze({ timeoutMs: 10_000 }).then(() => true, (err) => {
    log.warn("fs-freeze failed; backing up without it", { error: String(err) });
    return false;
  });
  return { sentAt, answeredAt: performance.now(), ok };
}

/**
 * Sends fs-thaw to a frozen guest at once, and has the jobs held for the thaw (HELD_SPEED)
 * released once it is answered; `finishBackupJobs` awaits both. `t1`: when the transaction
 * was sent.
 */
function thawGuest(
  qmp: QmpExecutor,
  agent: GuestAgent,
  s: StartedJobs,
  frozen: Freeze,
  t1: number,
): void {
  if (frozen.ok) {
    const t2 = performance.now();
    s.thawed = agent.fsThaw({ timeoutMs: 10_000 }).then(
      () => {},
      (err) => log.warn("fs-thaw failed", { error: String(err) }),
    ).then(() => {
      const t3 = performance.now();
      s.freezeMs = ms(t3 - frozen.sentAt);
      s.freezePhasesMs = {
        freeze: ms(frozen.answeredAt - frozen.sentAt),
        transaction: ms(t2 - t1),
        thaw: ms(t3 - t2),
      };
    });
  }
  s.released = s.thawed.then(() => release(qmp, s));
  s.released.catch(() => {}); // awaited by finishBackupJobs, or dropped on failure
}

/**
 * Waits for the jobs started by {@link startBackupJobs}; on success hands back the removal of
 * the bitmaps the new one replaces (`dropOldBitmaps`), on failure or abort undoes everything;
 * removes the target nodes and takes the files back from QEMU's user either way.
 */
export async function finishBackupJobs(
  qmp: QmpExecutor,
  req: JobRequest,
  s: StartedJobs,
): Promise<JobResult> {
  let tornDown = false;
  try {
    // The jobs copy at full speed once the guest answered its thaw (HELD_SPEED), and this
    // host reads and hashes the files only after that too.
    await s.released;
    const tReleased = performance.now();
    s.phasesMs.release = ms(tReleased - s.startedAt);
    const copied = await waitJobs(qmp, s.files.map(jobId), req.signal, req.onProgress);
    const tCopied = performance.now();
    s.phasesMs.copy = ms(tCopied - tReleased);
    // Target nodes closed first: QEMU writes the files' last metadata when it closes them.
    await teardown(qmp, req, s);
    tornDown = true;
    s.phasesMs.cleanup = ms(performance.now() - tCopied);
    let dropped: Promise<void> | null = null;
    return {
      dropOldBitmaps: () => {
        const tDrop = performance.now();
        return dropped ??= dropOldBitmaps(qmp, req, s).then(() => {
          s.phasesMs.bitmaps = ms(performance.now() - tDrop);
        });
      },
      phasesMs: s.phasesMs,
      disks: s.files.map((d, i) => ({
        id: d.id,
        file: d.file,
        copiedBytes: copied[i],
        virtualBytes: d.virtualBytes,
      })),
      fsFrozen: s.fsFrozen,
      freezeMs: s.freezeMs,
      freezePhasesMs: s.freezePhasesMs,
    };
  } catch (err) {
    await s.thawed;
    await undo(qmp, req, s);
    throw err;
  } finally {
    if (!tornDown) await teardown(qmp, req, s);
  }
}

/**
 * Success: the parent's bitmap (or any older chain's) is spent; the new one counts on. One
 * left behind (a failure here) only costs its upkeep: an incremental backup builds on the
 * newest recorded backup among the disk's bitmaps.
 */
async function dropOldBitmaps(qmp: QmpExecutor, req: JobRequest, s: StartedJobs): Promise<void> {
  const keep = bitmapName(req.id);
  for (const d of s.files) {
    const bitmaps = await dirtyBitmaps(qmp, d.node).catch((err) => {
      log.warn("cannot list a disk's bitmaps", { disk: d.id, error: String(err) });
      return [];
    });
    for (const bm of bitmaps) {
      if (bm.name.startsWith(BITMAP_PREFIX) && bm.name !== keep) {
        await blockDirtyBitmapRemove(qmp, d.node, bm.name).catch((err) =>
          log.warn("cannot remove an old bitmap", { bitmap: bm.name, error: String(err) })
        );
      }
    }
  }
}

/** After a failure: jobs cancelled, the new bitmap dropped (the parent's stays), files removed. */
async function undo(qmp: QmpExecutor, req: JobRequest, s: StartedJobs): Promise<void> {
  if (s.started) {
    for (const d of s.files) await jobCancel(qmp, jobId(d)).catch(() => {});
    await waitGone(qmp, s.files.map(jobId));
    for (const d of s.files) {
      await blockDirtyBitmapRemove(qmp, d.node, bitmapName(req.id)).catch(() => {});
    }
  }
  for (const d of s.files) await Deno.remove(join(req.dir, d.file)).catch(() => {});
}

/** Target nodes removed from QEMU, files taken back from its user. */
async function teardown(qmp: QmpExecutor, req: JobRequest, s: StartedJobs): Promise<void> {
  // The qcow2 nodes before the file nodes under them.
  for (const n of s.added.splice(0).reverse()) {
    await blockdevDel(qmp, n).catch((err) =>
      log.warn("cannot remove a backup target node", { node: n, error: String(err) })
    );
  }
  for (const d of s.files) {
    const path = join(req.dir, d.file);
    await Deno.chown(path, 0, 0).catch(() => {});
    await Deno.chmod(path, 0o600).catch(() => {});
  }
}

/** A QMP connection that may also deliver events (QmpClient, ReconnectingQmp). */
type QmpWithEvents = QmpExecutor & { on?(listener: QmpListener): () => void };

/**
 * Waits until every job concluded; returns each job's bytes; throws on an error or abort.
 * Polls `query-jobs` every 200 ms for progress, and at once when one of the jobs changed
 * state (`JOB_STATUS_CHANGE`) since the last look was sent, so a job's end is seen within a
 * round trip: also one that ends while a look is on its way, whose event comes before the
 * pause it is to end (such an event was once lost, and the end seen 200 ms late: a target
 * file's formatting took 210–220 ms instead of 2–20 in some backups).
 */
async function waitJobs(
  qmp: QmpWithEvents,
  ids: string[],
  signal: AbortSignal,
  onProgress: (done: number, total: number) => void,
): Promise<number[]> {
  const changed = new JobChanges();
  const off = qmp.on?.((e) => {
    if (e.event === "JOB_STATUS_CHANGE" && ids.includes(String(e.data?.id))) changed.notify();
  });
  const onAbort = () => changed.notify();
  signal.addEventListener("abort", onAbort);
  try {
    const look = () => {
      changed.reset();
      return queryJobs(qmp);
    };
    return await pollJobs(qmp, ids, signal, onProgress, look, (ms) => changed.wait(ms));
  } finally {
    off?.();
    signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Whether something changed since {@link JobChanges.reset}, and a wait that a change ends:
 * at once if it came before the wait began.
 */
export class JobChanges {
  #pending = false;
  #wake: (() => void) | null = null;

  /** Forgets earlier changes (called as a look is sent: it will see them). */
  reset(): void {
    this.#pending = false;
  }

  notify(): void {
    this.#pending = true;
    this.#wake?.();
  }

  /** Resolves after `ms`, or at the first change since the last reset. */
  wait(ms: number): Promise<void> {
    if (this.#pending) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }
}

async function pollJobs(
  qmp: QmpExecutor,
  ids: string[],
  signal: AbortSignal,
  onProgress: (done: number, total: number) => void,
  look: () => Promise<Awaited<ReturnType<typeof queryJobs>>>,
  pause: (ms: number) => Promise<void>,
): Promise<number[]> {
  let cancelled = false;
  for (;;) {
    if (signal.aborted && !cancelled) {
      cancelled = true;
      for (const id of ids) await jobCancel(qmp, id).catch(() => {});
    }
    const jobs = (await look()).filter((j) => ids.includes(j.id));
    const done = jobs.reduce((n, j) => n + (j["current-progress"] ?? 0), 0);
    const total = jobs.reduce((n, j) => n + (j["total-progress"] ?? 0), 0);
    onProgress(done, total);
    if (jobs.length === ids.length && jobs.every((j) => j.status === "concluded")) {
      for (const id of ids) await jobDismiss(qmp, id).catch(() => {});
      const failed = jobs.find((j) => j.error);
      if (cancelled) throw signal.reason ?? new ConflictError("backup aborted");
      if (failed) throw new NovaError("internal", `backup job ${failed.id}: ${failed.error}`);
      return ids.map((id) => jobs.find((j) => j.id === id)!["total-progress"] ?? 0);
    }
    if (jobs.length < ids.length) {
      throw new NovaError("internal", "a backup job disappeared (did QEMU stop?)");
    }
    await pause(200);
  }
}

/** After cancelling: waits for the jobs to conclude and dismisses them. */
async function waitGone(qmp: QmpExecutor, ids: string[]): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const jobs = (await queryJobs(qmp).catch(() => [])).filter((j) => ids.includes(j.id));
    for (const j of jobs) {
      if (j.status === "concluded") await jobDismiss(qmp, j.id).catch(() => {});
    }
    if (!jobs.length) return;
    await sleep(100);
  }
}
