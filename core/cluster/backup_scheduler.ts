/**
 * Backup schedules, run by the leader: each VM with a schedule (a cron
 * expression in UTC, parsed by `cron-parser`) is backed up when its next time
 * came; then its backups are pruned by the schedule's retention, as Proxmox's
 * keep-last / keep-daily / keep-weekly do, with one rule on top: a backup
 * that a kept backup builds on is kept too, so every kept backup stays
 * restorable.
 *
 * A scheduled backup is incremental on the VM's newest chain until that chain
 * holds {@link FULL_EVERY} backups; then a new full one starts the next chain,
 * so old chains become prunable as a whole.
 *
 * The time a schedule was last due is replicated (`backup.schedule.ran`,
 * proposed before the backup starts): a new leader neither repeats nor skips
 * a due time; a missed time (no leader then) is run once when one leads again.
 */
import { CronExpressionParser } from "cron-parser";
import type { ClusterNode } from "./node.ts";
import type { BackupRecord, BackupScheduleRecord } from "../fsm/mod.ts";
import { log } from "../log/mod.ts";
import { auditSystem } from "./audit.ts";
import { startBackup } from "./backup_service.ts";

/** Backups in one chain before a scheduled backup starts a new one (a full backup). */
export const FULL_EVERY = 7;
const TICK_MS = 20_000;
const DAY_MS = 86_400_000;

/** Why `cron` is not a valid five-field cron expression, or null. */
export function checkCron(cron: string): string | null {
  if (cron.trim().split(/\s+/).length !== 5) {
    return "five fields: minute hour day-of-month month day-of-week (UTC)";
  }
  try {
    CronExpressionParser.parse(cron, { tz: "UTC" });
    return null;
  } catch (err) {
    return `not a cron expression: ${(err as Error).message}`;
  }
}

/** The newest time `cron` was due at or before `now` (epoch ms). */
export function lastDue(cron: string, now: number): number {
  const it = CronExpressionParser.parse(cron, { tz: "UTC", currentDate: new Date(now + 1) });
  return it.prev().getTime();
}

/** Retention: how many of the newest backups, and of the newest per UTC day and ISO week. */
export interface Retention {
  keepLast: number;
  keepDaily: number;
  keepWeekly: number;
}

/**
 * Which of one VM's backups to keep: the newest `keepLast`, the newest of each of the
 * newest `keepDaily` days and `keepWeekly` weeks that have backups, and every backup
 * any of those builds on.
 */
export function retained(backups: BackupRecord[], r: Retention): Set<string> {
  const newest = [...backups].sort((a, b) => b.createdAt - a.createdAt);
  const keep = new Set<string>(newest.slice(0, r.keepLast).map((b) => b.id));
  const byPeriod = (n: number, period: (t: number) => number) => {
    const seen = new Set<number>();
    for (const b of newest) {
      const p = period(b.createdAt);
      if (seen.has(p)) continue;
      if (seen.size >= n) break;
      seen.add(p);
      keep.add(b.id);
    }
  };
  byPeriod(r.keepDaily, (t) => Math.floor(t / DAY_MS));
  // Weeks from Monday (1970-01-01 was a Thursday).
  byPeriod(r.keepWeekly, (t) => Math.floor((t / DAY_MS + 3) / 7));
  const byId = new Map(backups.map((b) => [b.id, b]));
  for (const id of [...keep]) {
    for (let b = byId.get(id); b?.parent; b = byId.get(b.parent)) keep.add(b.parent);
  }
  return keep;
}

/** Deletes one backup: its record, then its files (host/backup's removeBackupFiles). */
export type BackupRemover = (b: BackupRecord) => Promise<void>;

/** Runs due schedules and prunes while this node leads. */
export class BackupScheduler {
  #timer: ReturnType<typeof setInterval> | null = null;
  #busy = false;

  constructor(private readonly node: ClusterNode, private readonly removeFiles: BackupRemover) {}

  start(): void {
    this.#timer = setInterval(() => void this.tick(), TICK_MS);
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One pass (also called by tests): due backups started, retention applied. */
  async tick(now = Date.now()): Promise<void> {
    if (!this.node.isLeader() || this.#busy) return;
    this.#busy = true;
    try {
      for (const s of this.node.fsm.backups.schedules()) {
        await this.runOne(s, now).catch((err) =>
          log.warn("backup schedule failed", { vm: s.vm, error: String(err) })
        );
      }
    } finally {
      this.#busy = false;
    }
  }

  private async runOne(s: BackupScheduleRecord, now: number): Promise<void> {
    const vm = this.node.fsm.vm(s.vm);
    if (!vm) return;
    await this.prune(s);
    const due = lastDue(s.cron, now);
    if (due <= s.lastRunAt) return;
    await this.node.propose({ op: "backup.schedule.ran", vm: s.vm, dueAt: due, at: now });
    const mine = this.node.fsm.backups.list(s.vm);
    const last = mine[mine.length - 1];
    const chainLength = last ? mine.filter((b) => b.chain === last.chain).length : 0;
    const incremental = !!last && last.target === s.target && chainLength < FULL_EVERY;
    const op = await startBackup(
      this.node,
      { vm: s.vm, target: s.target, incremental },
      "system:backup.schedule",
    );
    auditSystem(this.node, "backup.schedule", `vm/${s.vm}`, `${op.id} (${s.cron})`);
  }

  private async prune(s: BackupScheduleRecord): Promise<void> {
    const busy = this.node.fsm.runningOperations().some((o) =>
      o.state === "running" && o.target === s.vm && (o.kind === "backup" || o.kind === "restore")
    );
    if (busy) return;
    const all = this.node.fsm.backups.list(s.vm).filter((b) => b.target === s.target);
    const keep = retained(all, s);
    // Newest first: a backup's children go before it.
    for (const b of all.filter((x) => !keep.has(x.id)).reverse()) {
      if (this.node.fsm.backups.children(b.id).length) continue;
      await this.node.propose({
        op: "backup.delete",
        id: b.id,
        by: "system:backup.prune",
        at: Date.now(),
      });
      await this.removeFiles(b).catch((err) =>
        log.warn("cannot remove a pruned backup's files", { backup: b.id, error: String(err) })
      );
      auditSystem(this.node, "backup.prune", `backup/${b.id}`, `retention of ${s.vm}`);
    }
  }
}
